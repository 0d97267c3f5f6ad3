"""Parts (a), (c), (e) and (f) of ``benchmarks/gpu_check.sh``: training on the GPU.

(a) ``train``: ``pretrain_gpt.py`` as users run it: bf16, CL_seqtru_voc + random-LTD, the
    distributed optimizer, the ``gpu-smoke`` preset's GPT and data, ``TRAIN_STEPS`` steps
    on the GPU; then the same command in fp32 on the CPU (GPUs hidden) for its first
    ``CPU_STEPS`` steps; the per-step losses compared (relative ``LOSS_TOLERANCE``).
(c) ``mfu``: a bf16 training step of a GPT-2 350M-size model: model FLOP/s against the
    GPU's spec bf16 dense peak and against the bf16 ``torch.mm`` peak measured in the run.
(e) ``memory``: the distributed optimizer's persistent memory against the ZeRO-1 formula
    (``optimizer_memory.py``, rank 0 of a fake DP-8 group, on the CPU) and, on the GPU,
    the 350M model's allocated memory after the first step against the formula (DP 1)
    and its peak against the formula plus an activation estimate.
(f) ``study``: ``tools/data_efficiency_study.py``'s ``gpu-smoke`` preset: baseline at 100%,
    CL_seqtru_voc + random-LTD at 50%, baseline at 50%; training time and validation loss
    of each, as measured (the time saving is reported, not checked).

``smoke``: the same code on the CPU at the ``smoke`` preset's size, in seconds.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import replace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron.study import data as study_data  # noqa: E402
from megatron.study.commands import RunSpec, pretrain_command  # noqa: E402
from megatron.study.presets import get_preset  # noqa: E402

TRAIN_STEPS, CPU_STEPS, LOSS_TOLERANCE = 200, 20, 0.03
COMPOSED = "CL_seqtru_voc+random-LTD"
_LOSS = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.*?lm loss: ([\d.E+-]+)")
GPT_350M = dict(num_layers=24, hidden_size=1024, num_attention_heads=16, seq_length=1024,
                vocab_size=50304, micro_batch_size=8)


def preset_for(smoke: bool):
    """``gpu-smoke``, or for ``--smoke`` the same plan and flags at the ``smoke`` size."""
    preset = get_preset("gpu-smoke")
    if not smoke:
        return preset
    small = get_preset("smoke")     # 8 steps at 100%, one evaluation at the end
    return replace(small, name="gpu-smoke (smoke size)", plan=preset.plan, eval_interval=100,
                   train_tokens=8 * small.global_batch_size * small.seq_length,
                   extra=tuple(f for f in small.extra) + ("--bf16",), reference=None)


def shared_data(preset, out: str, log=print):
    """The preset's default-corpus token store, built once under ``out/data``."""
    return study_data.default_corpus(preset, os.path.join(out, "data"), log)


def _start(cmd: list[str], log_path: str, cpu: bool) -> subprocess.Popen:
    env = dict(os.environ)
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _losses(proc: subprocess.Popen, log_path: str) -> list[tuple[int, float]]:
    rc = proc.wait()
    text = open(log_path).read()
    if rc != 0:
        raise RuntimeError(f"{' '.join(proc.args[:2])} failed (exit {rc}): {text[-2000:]}")
    return [(int(i), float(v)) for i, v in _LOSS.findall(text)]


def check_train(smoke: bool, out: str) -> dict:
    """(a): bf16 + CL + random-LTD + distributed optimizer on the accelerator, against fp32
    on the CPU for the first steps."""
    preset = preset_for(smoke)
    steps, cpu_steps = (4, 2) if smoke else (TRAIN_STEPS, CPU_STEPS)
    data = shared_data(preset, out)
    variant = replace(preset, train_tokens=steps * preset.global_batch_size * preset.seq_length)
    run = RunSpec(variant.arms[COMPOSED], 1.0, 1234)
    index_dir = os.path.join(out, "train", "index")
    study_data.build_index(variant, data, run.seed, index_dir, [run.arm], print)
    extra = ("--use-distributed-optimizer", "--log-interval", "1")
    started = {}
    for name, flags, cpu in (("bf16", variant.extra, smoke),
                             ("fp32_cpu", tuple(f for f in variant.extra if f != "--bf16"), True)):
        run_dir = os.path.join(out, "train", name)
        os.makedirs(run_dir, exist_ok=True)
        more = extra + (("--exit-interval", str(cpu_steps)) if name == "fp32_cpu" else ())
        cmd = [sys.executable, *pretrain_command(replace(variant, extra=flags), run, data, run_dir,
                                                 os.path.join(run_dir, "tb"), index_dir, more)]
        log = os.path.join(run_dir, "train.log")
        started[name] = (_start(cmd, log, cpu), log)     # side by side: GPU and CPU
    runs = {name: _losses(proc, log) for name, (proc, log) in started.items()}
    gpu, cpu = dict(runs["bf16"]), dict(runs["fp32_cpu"])
    compared = sorted(set(gpu) & set(cpu))
    worst = max((abs(gpu[i] - cpu[i]) / cpu[i] for i in compared), default=math.inf)
    # sized in tokens: the curriculum's short early sequences take more steps than nominal
    last = max(gpu, default=0)
    finished = last >= steps and all(math.isfinite(v) for v in gpu.values())
    ok = finished and len(compared) == cpu_steps and worst <= LOSS_TOLERANCE
    return {"status": "ok" if ok else "failed", "steps": last, "cpu_steps": len(compared),
            "max_relative_loss_difference": worst, "tolerance": LOSS_TOLERANCE,
            "loss_first_last": [gpu.get(1), gpu.get(last)],
            "losses": {"bf16": runs["bf16"], "fp32_cpu": runs["fp32_cpu"]},
            "summary": f"{last} steps ({steps} nominal); loss {gpu.get(1, math.nan):.3f} -> "
                       f"{gpu.get(last, math.nan):.3f}; vs fp32 CPU over {len(compared)} "
                       f"steps: max rel. diff {worst:.4f} (tolerance {LOSS_TOLERANCE})"}


def _spec_peak() -> tuple[str, float | None]:
    """(device, bf16 dense data-sheet peak in FLOP/s): the training log's MFU table."""
    from megatron.throughput import device_name, peak_tflops
    name = device_name()
    peak = peak_tflops(name)
    return name or "cpu", None if peak is None else peak * 1e12


def _gpt_args(smoke: bool):
    import argparse
    size = (dict(num_layers=2, hidden_size=64, num_attention_heads=2, seq_length=64,
                 vocab_size=512, micro_batch_size=2) if smoke else GPT_350M)
    return argparse.Namespace(**size, dropout=0.0, bf16=not smoke,
                              device="cpu" if smoke else "cuda")


def check_mfu(smoke: bool) -> dict:
    """(c): MFU of a bf16 350M-class step against the spec peak and a measured peak."""
    import train_throughput as tt
    args = _gpt_args(smoke)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    measured = tt.matmul_peak(256 if smoke else 8192, 5, args.device, dtype)
    model, optimizer = tt.build(args)
    tt.train_steps(model, optimizer, args, 1)
    step = min(tt.train_steps(model, optimizer, args, 2 if smoke else 10))
    measured = max(measured, tt.matmul_peak(256 if smoke else 8192, 5, args.device, dtype))
    flops = tt.model_flops_per_step(args.micro_batch_size, args.seq_length, args.num_layers,
                                    args.hidden_size, args.vocab_size) / step
    name, spec = _spec_peak()
    return {"status": "ok", "device": name, "step_ms": step * 1e3, "model_flops_per_s": flops,
            "measured_matmul_peak": measured, "spec_peak": spec,
            "mfu_vs_measured": flops / measured, "mfu_vs_spec": None if spec is None else flops / spec,
            "summary": f"{flops / 1e12:.1f} TFLOP/s: MFU {flops / measured:.1%} of the measured "
                       f"matmul peak ({measured / 1e12:.0f} TFLOP/s)" + (
                           f", {flops / spec:.1%} of the spec peak ({spec / 1e12:.0f})"
                           if spec else ", spec peak unknown for this device")}


def _activation_bytes(a) -> int:
    """Activations kept for backward, no recompute (Korthikanti et al. 2022 with the
    attention scores never materialised: 34 s b h bytes per layer), plus the LM head's
    bf16 logits, their fp32 copy and the loss's fp32 softmax: 10 s b V bytes."""
    s, b = a.seq_length, a.micro_batch_size
    return 34 * s * b * a.hidden_size * a.num_layers + 10 * s * b * a.vocab_size


def check_memory(smoke: bool) -> dict:
    """(e): ZeRO-1 memory on the CPU (fake DP 8), and the 350M model's on the GPU."""
    import optimizer_memory
    r = optimizer_memory.measure(8, True, *((2, 64, 512, 16) if smoke else (4, 256, 8192, 64)))
    out = {"zero1_cpu": {"params": r.params, "dp": r.dp, "measured_bytes": r.measured_bytes,
                         "formula_bytes": r.formula_bytes, "ratio": r.ratio,
                         "step_transient_bytes": r.later_step_peak_bytes}}
    ok = abs(r.ratio - 1) < 0.02
    summary = f"ZeRO-1 (CPU, DP 8): measured/formula {r.ratio:.4f}"
    if not smoke and torch.cuda.is_available():
        gpu = _gpu_memory()
        out["gpu_350m"] = gpu
        summary += (f"; GPU 350M: after a step {gpu['allocated_ratio']:.3f}x the formula, "
                    f"peak {gpu['peak_ratio']:.3f}x formula + activations")
    return {"status": "ok" if ok else "failed", **out, "summary": summary}


def _gpu_memory() -> dict:
    import train_throughput as tt
    from megatron.model.config import TransformerConfig
    from megatron.model.gpt_model import GPTModel
    from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
    args = _gpt_args(False)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    model = GPTModel(TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads, padded_vocab_size=args.vocab_size,
        max_position_embeddings=args.seq_length, hidden_dropout=0.0, attention_dropout=0.0,
        params_dtype=torch.bfloat16)).to(args.device)
    optimizer = get_megatron_optimizer([model], OptimizerConfig(
        lr=1e-4, bf16=True, use_distributed_optimizer=True))
    tt.train_steps(model, optimizer, args, 2)
    n = sum(p.numel() for p in model.parameters())
    formula = 18 * n                                      # DP 1: 2 + 4 + 12 bytes/param
    allocated = torch.cuda.memory_allocated() - before
    peak = torch.cuda.max_memory_allocated() - before
    estimate = formula + _activation_bytes(args)
    return {"params": n, "formula_bytes": formula, "allocated_bytes": allocated,
            "allocated_ratio": allocated / formula, "peak_bytes": peak,
            "estimate_bytes": estimate, "peak_ratio": peak / estimate}


def check_study(smoke: bool, out: str) -> dict:
    """(f): the gpu-smoke study (baseline 100%, composed 50%, baseline 50%)."""
    from megatron.study.runner import StudyConfig, run_study
    preset = preset_for(smoke)
    data = shared_data(preset, out)
    # one GPU: one run at a time; the CPU smoke runs them side by side
    records, _ = run_study(StudyConfig(preset=preset, out_dir=os.path.join(out, "study"),
                                       seeds=1, plan=list(preset.plan), data=data,
                                       jobs=3 if smoke else 1, threads_per_job=1 if smoke else None))
    by = {(r["arm"], r["budget_fraction"]): r for r in records}
    base = by[("baseline", 1.0)]
    rows = [{"arm": a, "budget": f, "train_seconds": r["train_seconds"],
             "time_ratio": r["train_seconds"] / base["train_seconds"],
             "consumed_tokens": r["consumed_tokens"], "val_loss": r["val_loss"]}
            for (a, f), r in by.items()]
    composed = by[(COMPOSED, 0.5)]
    return {"status": "ok", "rows": rows,
            "summary": f"{COMPOSED} at 50%: {composed['train_seconds'] / base['train_seconds']:.2f}x "
                       f"the baseline's time, val loss {composed['val_loss']:.3f} vs "
                       f"{base['val_loss']:.3f} (baseline 100%), "
                       f"{by[('baseline', 0.5)]['val_loss']:.3f} (baseline 50%)"}
