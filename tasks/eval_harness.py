"""Run lm-evaluation-harness (0.4.x) on one of our GPT checkpoints.

    python tasks/eval_harness.py --load CKPT --tasks lambada_openai hellaswag \\
        [--num-fewshot 0] [--include-path MY_TASKS] [--output-path results.json]
    torchrun --nproc-per-node 4 tasks/eval_harness.py --load CKPT --tasks ... \\
        --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2

The checkpoint may have any TP/PP layout (it is merged, then split for this run's
layout). Results are lm-eval's JSON (``results``, ``configs``, ``versions``, ``n-shot``,
``n-samples``; ``samples`` too with ``--log-samples``), written by rank 0. Tasks load
their data through ``datasets``: real tasks need their datasets in the local cache
(``HF_DATASETS_OFFLINE=1``), or local files named in a task YAML under ``--include-path``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron.core import parallel_state  # noqa: E402
from tasks.eval_model import TokenizerFlags, load_eval_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", required=True, help="our checkpoint folder (any TP/PP layout)")
    p.add_argument("--iteration", type=int, default=None, help="default: the tracker's")
    p.add_argument("--tasks", nargs="+", required=True, help="lm-eval task or group names")
    p.add_argument("--include-path", default=None, help="a folder of extra task YAMLs")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=float, default=None,
                   help="documents per task (a fraction when < 1), for quick checks")
    p.add_argument("--output-path", default=None,
                   help="results .json file, or a folder for results.json")
    p.add_argument("--log-samples", action="store_true", help="keep per-document outputs")
    p.add_argument("--seed", type=int, default=1234, help="lm-eval's few-shot/random seed")
    p.add_argument("--bootstrap-iters", type=int, default=100000,
                   help="bootstrap resamples for the standard errors (0: none)")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1)
    p.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    for flag in ("--tokenizer-type", "--vocab-file", "--merge-file", "--tokenizer-model"):
        p.add_argument(flag, default=None, help="override the checkpoint's tokenizer flag")
    return p.parse_args(argv)


def _init_parallel(args: argparse.Namespace) -> None:
    """Join torchrun's group and build the TP/PP groups (world size must be T x P)."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp * pp:
        raise SystemExit(f"world size {world} must equal --tensor-model-parallel-size {tp} x "
                         f"--pipeline-model-parallel-size {pp} (no data parallelism here)")
    if world > 1:
        if not dist.is_initialized():
            backend = "gloo"
            if torch.cuda.is_available():
                backend = "nccl"
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        parallel_state.initialize_model_parallel(tp, pp)


def _output_file(path: str) -> str:
    if path.endswith(".json"):
        return path
    return os.path.join(path, "results.json")


def evaluate(args: argparse.Namespace) -> dict:
    """Load the model, run lm-eval, return its results dict (every rank)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from tasks.eval_lm import MegatronLM
    scorer = load_eval_model(args.load, args.iteration, TokenizerFlags(
        args.tokenizer_type, args.vocab_file, args.merge_file, args.tokenizer_model))
    lm = MegatronLM(scorer, args.batch_size)
    manager = TaskManager(include_path=args.include_path)
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    return lm_eval.simple_evaluate(
        model=lm, tasks=args.tasks, num_fewshot=args.num_fewshot, limit=limit,
        task_manager=manager, log_samples=args.log_samples, random_seed=args.seed,
        numpy_random_seed=args.seed, torch_random_seed=args.seed,
        fewshot_random_seed=args.seed, bootstrap_iters=args.bootstrap_iters)


def main(argv: list[str] | None = None) -> dict:
    """Run the harness; returns lm-eval's results dict on every rank."""
    from lm_eval.utils import handle_non_serializable, make_table
    args = parse_args(argv)
    _init_parallel(args)
    results = evaluate(args)
    if dist.is_initialized():   # lm-eval returns them on LOCAL_RANK 0 only
        box = [results]
        dist.broadcast_object_list(box, src=0)
        results = box[0]
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(make_table(results), flush=True)
        if args.output_path:
            path = _output_file(args.output_path)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(results, f, indent=2, default=handle_non_serializable)
            os.replace(path + ".tmp", path)
            print(f" > wrote {path}", flush=True)
    return results


if __name__ == "__main__":
    main()
