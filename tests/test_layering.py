"""The library never reaches up into scripts: nothing under megatron/ or tasks/ imports
tools/ or a pretrain_*.py entry point, or loads a file by its path (checked on the source,
by walking every module's syntax tree, so a lazy import inside a function counts too)."""
from __future__ import annotations

import ast
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
LIBRARY = ("megatron", "tasks")
_BY_PATH = {"spec_from_file_location", "SourceFileLoader", "run_path", "load_source",
            "exec_module"}


def _is_script(module: str) -> bool:
    top = module.split(".")[0]
    return top == "tools" or top.startswith("pretrain_")


def upward_imports(path: str) -> list[str]:
    """``line: what`` for each import of a script, or load by path, in one source file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in _BY_PATH:
                found.append(f"{node.lineno}: loads a file by path ({called})")
            elif called in ("import_module", "__import__") and node.args \
                    and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{node.lineno}: imports {n}" for n in names if _is_script(n)]
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def library_files(root: str = ROOT) -> list[str]:
    out = []
    for package in LIBRARY:
        for folder, _, files in os.walk(os.path.join(root, package)):
            out += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(out)


def test_library_imports_no_script_and_loads_nothing_by_path():
    problems = [f"{os.path.relpath(path, ROOT)}:{line}"
                for path in library_files() for line in upward_imports(path)]
    assert not problems, "library code reaching up into scripts:\n" + "\n".join(problems)


def test_the_walk_sees_lazy_imports_and_loads_by_path(tmp_path):
    """The checker itself: an import inside a function and a load by path are found."""
    src = tmp_path / "m.py"
    src.write_text("import importlib.util\n"
                   "def f():\n"
                   "    from tools.checkpoint_util import load_whole\n"
                   "    import pretrain_bert\n"
                   "    importlib.import_module('tools.analyze_data')\n"
                   "    return importlib.util.spec_from_file_location('x', 'tools/x.py')\n"
                   "from megatron.checkpointing import whole_model\n")
    assert upward_imports(str(src)) == [
        "3: imports tools.checkpoint_util", "4: imports pretrain_bert",
        "5: imports tools.analyze_data", "6: loads a file by path (spec_from_file_location)"]
