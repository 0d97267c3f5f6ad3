"""Imports that would run back up the layers: library code, tasks and tools never import a
``pretrain_*.py`` entry point, and the curriculum's mechanisms (sampler, scheduler,
clusters, transforms) never import the data-efficiency config that is built on them."""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(folder: str):
    """(path, imported module name) of every import under ``folder``."""
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    yield from ((path, a.name) for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    yield path, node.module


def test_no_library_code_imports_an_entry_point():
    found = [(os.path.relpath(p, ROOT), m) for folder in ("megatron", "tasks", "tools")
             for p, m in _imports(folder) if m.split(".")[0] in ("pretrain_gpt", "pretrain_bert")]
    assert found == []


def test_the_curriculum_does_not_import_the_config_built_on_it():
    found = [(os.path.relpath(p, ROOT), m)
             for p, m in _imports(os.path.join("megatron", "data_efficiency", "curriculum"))
             if m in ("megatron.data_efficiency.config", "megatron.data_efficiency.step_plan",
                      "megatron.data_efficiency.runtime")]
    assert found == []
