"""Imports that would run back up the layers, checked on the source by walking every
module's syntax tree (so a lazy import inside a function counts too): nothing under
megatron/ or tasks/ imports tools/ or a pretrain_*.py entry point, or loads a file by its
path; tools/ import no entry point either; and the curriculum's mechanisms (sampler,
clusters, transforms) never import the data-efficiency config or step plan built on them."""
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


def library_files(root: str = ROOT, packages: tuple[str, ...] = LIBRARY) -> list[str]:
    out = []
    for package in packages:
        for folder, _, files in os.walk(os.path.join(root, package)):
            out += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(out)


def imported_modules(path: str) -> set[str]:
    """Every module name a source file imports (absolute imports)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


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


def test_tools_import_no_entry_point():
    found = [(os.path.relpath(p, ROOT), m) for p in library_files(packages=("tools",))
             for m in imported_modules(p) if m.split(".")[0].startswith("pretrain_")]
    assert found == []


def test_the_curriculum_does_not_import_the_config_built_on_it():
    above = {"megatron.data_efficiency.config", "megatron.data_efficiency.step_plan",
             "megatron.data_efficiency.runtime"}
    found = [(os.path.relpath(p, ROOT), m)
             for p in library_files(packages=(os.path.join("megatron", "data_efficiency",
                                                           "curriculum"),))
             for m in imported_modules(p) & above]
    assert found == []
