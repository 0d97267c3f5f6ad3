"""benchmarks/gpu_check.sh --smoke: every part of the first GPU's acceptance check runs on
the CPU at tiny sizes and lands in one JSON report with a summary table, so the script does
not rot between GPU loans (its figures are not checked: tests never assert on time)."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_smoke_runs_every_part_into_one_report(tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.load(open(out / "gpu_check.json"))
    parts = report["parts"]
    assert list(parts) == ["data", "train", "kernels", "mfu", "ltd", "memory", "study"]
    assert {name: r["status"] for name, r in parts.items()} == dict.fromkeys(parts, "ok")
    assert report["smoke"] and report["machine"]["torch"]
    # (a) the bf16 run against its fp32 twin on the CPU; (b) Triton bit-exact; (d) three
    # kept lengths; (e) the ZeRO-1 formula; (f) the three runs of the gpu-smoke plan
    assert parts["train"]["cpu_steps"] == 2 and parts["train"]["steps"] >= 4
    assert all(row["bit_exact"] for row in parts["kernels"]["rows"])
    assert [r["kept_fraction"] for r in parts["ltd"]["rows"]] == [0.25, 0.5, 0.75]
    assert abs(parts["memory"]["zero1_cpu"]["ratio"] - 1) < 0.02
    assert sorted((r["arm"], r["budget"]) for r in parts["study"]["rows"]) == [
        ("CL_seqtru_voc+random-LTD", 0.5), ("baseline", 0.5), ("baseline", 1.0)]
    assert "(f) gpu-smoke study" in proc.stdout and "report:" in proc.stdout
