"""Import a script from tools/ as a module (the tools are scripts, not a package)."""
import importlib.util
import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so worker processes can unpickle its functions
    spec.loader.exec_module(module)
    return module
