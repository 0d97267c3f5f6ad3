"""benchmarks/gpu_check.py's random-LTD part runs (tiny sizes on CPU), so the GPU script
does not rot between GPU loans; its figures are not checked (tests never assert on time)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ltd_check_runs_and_prints_the_three_ratios(capsys):
    spec = importlib.util.spec_from_file_location(
        "gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["ltd", "--smoke", "--num-layers", "4", "--hidden-size", "32",
                 "--num-attention-heads", "2", "--seq-length", "32", "--vocab-size", "64",
                 "--micro-batch-size", "2", "--steps", "1"])
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("  kept")] == \
        ["0.25", "0.5", "0.75"]
