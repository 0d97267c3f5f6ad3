"""The acceptance check for the first GPU: runs the parts of ``benchmarks/gpu_check.sh``
(each in its own process, with a time limit), writes one JSON report and prints a table.

    python benchmarks/gpu_check.py --out build/gpu_check          # on a CUDA machine
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_smoke   # the CPU parts, seconds
    python benchmarks/gpu_check.py --part kernels --out DIR       # one part

Parts (what each checks: ``gpu_check_training.py``, ``gpu_check_kernels.py``):
(data) the gpu-smoke preset's corpus, tokenizer and token store (shared by a and f);
(a) pretrain_gpt.py bf16 + CL_seqtru_voc + random-LTD + distributed optimizer on the GPU,
    against fp32 on the CPU for the first steps; (b) the Triton random-LTD kernels against
    the PyTorch path, bit-exact, and their times; (c) MFU of a 350M-class bf16 step against
    the spec peak and a measured matmul peak; (d) random-LTD step time against the FLOP
    ideal at kept 1/4, 1/2, 3/4; (e) memory against the ZeRO-1 formula and an estimate;
    (f) the gpu-smoke study: baseline 100%, composed arm 50%, baseline 50%.

The report (``OUT/gpu_check.json``): the machine (torch, CUDA, Triton, GPU), then per part
``status`` (ok / failed / skipped / timed out), ``seconds``, a one-line ``summary`` and
the part's figures. The limits add up to under 8 minutes on one GPU. ``--smoke`` runs the
parts one after the other in this process (Triton interpreted), without limits.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# name -> (title, time limit on a GPU in s, python packages it needs)
PARTS = {
    "data": ("data: corpus, tokenizer, token store", 90, ("numpy", "sentencepiece", "regex")),
    "train": ("(a) pretrain bf16 CL+LTD+ZeRO-1 vs fp32 CPU", 75,
              ("numpy", "sentencepiece", "tensorboard")),
    "kernels": ("(b) Triton kernels vs PyTorch", 40, ("triton",)),
    "mfu": ("(c) MFU, 350M bf16 step", 40, ()),
    "ltd": ("(d) random-LTD step vs FLOP ideal", 40, ()),
    "memory": ("(e) memory vs ZeRO-1 formula", 30, ()),
    "study": ("(f) gpu-smoke study", 150, ("numpy", "sentencepiece", "tensorboard",
                                          "matplotlib")),
}


def _missing(packages) -> list[str]:
    import importlib.util
    return [p for p in packages if importlib.util.find_spec(p) is None]


def run_part(name: str, smoke: bool, out: str) -> dict:
    """Run one part in this process; returns its result dict."""
    missing = _missing(PARTS[name][2])
    if missing:
        return {"status": "skipped", "summary": f"missing python package(s) {missing} "
                                                "(pip could not install them)"}
    sys.path.insert(0, HERE)
    if name in ("kernels", "ltd"):
        import gpu_check_kernels as k
        return k.check_kernels(smoke) if name == "kernels" else k.check_ltd(smoke)
    import gpu_check_training as t
    if name == "data":
        data = t.shared_data(t.preset_for(smoke), out)
        return {"status": "ok", "summary": f"token store {data.data_path}"}
    if name in ("train", "study"):
        return (t.check_train if name == "train" else t.check_study)(smoke, out)
    return t.check_mfu(smoke) if name == "mfu" else t.check_memory(smoke)


def _machine() -> dict:
    info = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.version.cuda,
                    gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001 - the report says what it could not read
        info["error"] = repr(exc)
    return info


def _spawn(name: str, smoke: bool, out: str, limit: float) -> dict:
    """One part in a child process (a crash or a hang cannot take the report with it)."""
    env = dict(os.environ)
    result_file = os.path.join(out, f"{name}.json")
    if os.path.exists(result_file):
        os.remove(result_file)
    cmd = [sys.executable, os.path.abspath(__file__), "--part", name, "--out", out]
    cmd += ["--smoke"] if smoke else []
    start = time.time()
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        # its own process group: a part's training runs die with it when it is stopped
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "timed out", "seconds": round(time.time() - start, 1),
                    "summary": f"over its {limit:g} s limit (log: {name}.log)"}
    seconds = round(time.time() - start, 1)
    if rc != 0 or not os.path.exists(result_file):
        tail = open(os.path.join(out, f"{name}.log")).read().strip().splitlines()[-1:]
        return {"status": "failed", "seconds": seconds,
                "summary": f"exit {rc}: {tail[0] if tail else ''} (log: {name}.log)"}
    with open(result_file) as f:
        return {**json.load(f), "seconds": seconds}


def table(report: dict) -> str:
    lines = [f"{'part':44s} {'status':9s} {'seconds':>7s}  result", "-" * 110]
    for name, r in report["parts"].items():
        lines.append(f"{PARTS[name][0]:44s} {r['status']:9s} {r.get('seconds', 0):7.1f}  "
                     f"{r.get('summary', '')}")
    return "\n".join(lines)


def _in_process(name: str, out: str) -> dict:
    """``--smoke``: one part in this process (no time limit; the CPU sizes take seconds)."""
    start = time.time()
    try:
        result = run_part(name, True, out)
    except Exception as exc:  # noqa: BLE001 - reported as the part's failure
        traceback.print_exc()
        result = {"status": "failed", "summary": f"{type(exc).__name__}: {exc}"[:300]}
    return {**result, "seconds": round(time.time() - start, 1)}


def run_all(smoke: bool, out: str, parts: list[str]) -> dict:
    os.makedirs(out, exist_ok=True)
    report = {"created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "smoke": smoke,
              "machine": _machine(), "parts": {}}
    for name in parts:
        limit = PARTS[name][1]
        print(f"== {PARTS[name][0]}" + ("" if smoke else f" (limit {limit} s)"), flush=True)
        result = _in_process(name, out) if smoke else _spawn(name, smoke, out, limit)
        report["parts"][name] = result
        print(f"   {result['status']}: {result.get('summary', '')}", flush=True)
        with open(os.path.join(out, "gpu_check.json"), "w") as f:   # a partial report too
            json.dump(report, f, indent=1, default=str)
    print("\n" + table(report))
    print(f"\nreport: {os.path.join(out, 'gpu_check.json')}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--out", default=os.path.join("build", "gpu_check"))
    p.add_argument("--part", choices=list(PARTS), help="run one part in this process")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    args = p.parse_args(argv)
    if args.smoke:   # the Triton kernels on the CPU: set before triton is first imported
        os.environ["TRITON_INTERPRET"] = "1"
    out = os.path.abspath(args.out)
    if args.part is None:
        report = run_all(args.smoke, out, [s for s in args.parts.split(",") if s])
        return 0 if all(r["status"] in ("ok", "skipped") for r in report["parts"].values()) else 1
    os.makedirs(out, exist_ok=True)
    try:
        result = run_part(args.part, args.smoke, out)
    except Exception as exc:  # noqa: BLE001 - reported as the part's failure
        traceback.print_exc()
        result = {"status": "failed", "summary": f"{type(exc).__name__}: {exc}"[:300]}
    with open(os.path.join(out, f"{args.part}.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
