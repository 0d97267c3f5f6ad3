"""Imports that would run back up the layers, checked on the source by walking every
module's syntax tree (so a lazy import inside a function counts too): nothing under
megatron/ or tasks/ imports tools/ or a pretrain_*.py entry point, or loads a file by its
path; tools/ import no entry point either; and the curriculum's mechanisms (sampler,
clusters, transforms) never import the data-efficiency config or step plan built on them.

And the argparse namespace stays in the arguments layer: below it (every other module of
megatron/ and tasks/ but the entry points) nothing takes an ``args`` parameter, reads an
attribute of ``args`` or of what ``parse_args`` / ``validate_args`` returned, or names
``argparse.Namespace``; the run is a ``megatron.run_config.RunConfig``."""
from __future__ import annotations

import ast
import functools
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
LIBRARY = ("megatron", "tasks")
_BY_PATH = {"spec_from_file_location", "SourceFileLoader", "run_path", "load_source",
            "exec_module"}


@functools.lru_cache(maxsize=None)
def syntax_tree(path: str) -> ast.Module:
    """A source file's syntax tree, parsed once for all the walks below (read only)."""
    return ast.parse(open(path, encoding="utf-8").read(), path)


def _is_script(module: str) -> bool:
    top = module.split(".")[0]
    return top == "tools" or top.startswith("pretrain_")


def upward_imports(path: str) -> list[str]:
    """``line: what`` for each import of a script, or load by path, in one source file."""
    tree = syntax_tree(path)
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
    tree = syntax_tree(path)
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


# The arguments layer: the modules that define flags, check them and turn them into config
# objects (``megatron.config_from_flags``, ``RunConfig``); only they read the namespace.
ARGUMENTS_LAYER = {
    "megatron/arguments.py", "megatron/checkpoint_flags.py", "megatron/deepspeed_compat.py",
    "megatron/flag_sizes.py", "megatron/fsdp_flags.py", "megatron/given_flags.py",
    "megatron/model_flags.py",
    "megatron/telemetry_flags.py", "megatron/data/bert_flags.py",
    "megatron/data_efficiency/config_flags.py", "megatron/data_efficiency/random_ltd/flags.py",
    "megatron/model/moe/flags.py", "megatron/study/cli.py", "tasks/finetune_args.py"}
# Scripts with their own command lines (as tools/ and pretrain_*.py, outside the library).
ENTRY_POINTS = {"tasks/main.py", "tasks/eval_harness.py", "tasks/glue/synthetic.py"}
_PARSERS = {"parse_args", "parse_known_args", "validate_args"}


def _called(node: ast.AST) -> str:
    func = node.func if isinstance(node, ast.Call) else None
    return getattr(func, "attr", None) or getattr(func, "id", "") if func is not None else ""


def namespace_uses(path: str) -> list[str]:
    """``line: what`` for each use of the argparse namespace in one source file."""
    tree = syntax_tree(path)
    parsed = {"args"} | {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                         and _called(node.value) in _PARSERS
                         for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found += [f"{node.lineno}: takes args" for a in node.args.args
                      + node.args.kwonlyargs if a.arg == "args"]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in parsed:
                found.append(f"{node.lineno}: reads {node.value.id}.{node.attr}")
            elif (node.value.id, node.attr) == ("argparse", "Namespace"):
                found.append(f"{node.lineno}: argparse.Namespace")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse" \
                and "Namespace" in {a.name for a in node.names}:
            found.append(f"{node.lineno}: argparse.Namespace")
        elif isinstance(node, ast.Call) and _called(node) in ("getattr", "vars") \
                and node.args and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in parsed:
            found.append(f"{node.lineno}: {_called(node)}({node.args[0].id})")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def test_nothing_below_the_arguments_layer_reads_the_namespace():
    below = [p for p in library_files() if os.path.relpath(p, ROOT).replace(os.sep, "/")
             not in ARGUMENTS_LAYER | ENTRY_POINTS]
    problems = [f"{os.path.relpath(p, ROOT)}:{line}" for p in below
                for line in namespace_uses(p)]
    assert not problems, ("the argparse namespace read below the arguments layer (take the "
                          "RunConfig, or add the flag to a config section):\n"
                          + "\n".join(problems))


def test_the_namespace_walk_sees_each_kind_of_use(tmp_path):
    """The checker itself: a parameter, a read of args or of a parsed namespace under
    another name, ``getattr`` / ``vars`` of it, and argparse.Namespace are each found;
    passing a parsed namespace on unread (as ``initialize_megatron`` does) is not."""
    src = tmp_path / "m.py"
    src.write_text("import argparse\n"
                   "from argparse import Namespace\n"
                   "def f(args):\n"
                   "    return args.lr\n"
                   "given = parse_args(None, args=[])\n"
                   "x = given.seed + getattr(given, 'lr') + len(vars(given))\n"
                   "y: argparse.Namespace = validate_args(given)\n"
                   "z = run_config_from_args(given)\n")
    assert namespace_uses(str(src)) == [
        "2: argparse.Namespace", "3: takes args", "4: reads args.lr", "6: reads given.seed",
        "6: getattr(given)", "6: vars(given)", "7: argparse.Namespace"]
