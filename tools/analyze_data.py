"""Offline data analyzer: index every sample of a token store by difficulty metrics.

    python tools/analyze_data.py --data-path PREFIX --granularity document \\
        --metrics seqlen voc total_vocab_freq --save-path DIR
    mpiexec -n 8 python tools/analyze_data.py ...                 # map and reduce over 8 ranks
    python tools/analyze_data.py --num-workers 2 ...              # same, launching mpiexec itself

For ``--granularity sample`` give the training dataset arguments (``--split --seq-length
--seed --train-samples``) so the sample ids are the GPTDataset indices the curriculum
sampler will draw. Output layout: see megatron/data_efficiency/analyzer/index_io.py and the
README. A killed job restarted with the same arguments reuses every finished shard.

Model-based metrics (``--metrics loss ppl proto_dist --reference-load CKPT``) score GPT
samples, or at ``--granularity document`` whole documents read as windows of
``--seq-length`` (default: the reference's) + 1 tokens (analyzer/document_scoring.py).

A blended ``--data-path w1 p1 w2 p2 ...`` (``--granularity sample``, any GPT metric) is
indexed by the blend's own sample ids, the blend built as training builds it
(megatron/data_efficiency/analyzer/blend.py); ``voc``'s probabilities are the token
histogram of all its stores' training documents.

``--granularity sample --model bert`` numbers BertDataset samples instead (a sentence-level
store from ``preprocess_data.py --split-sentences``; give ``--short-seq-prob`` and
``--bert-no-binary-head`` as to pretrain_bert.py). Metric definitions and limits:
megatron/data_efficiency/analyzer/bert_samples.py.

Run sizing (which training flags this tool takes instead of ``--train-samples``): printed
by ``--help``, from ``_RUN_SIZING`` below.

    python tools/analyze_data.py --data-path PREFIX --granularity sample --split 969,30,1 \\
        --seq-length 2048 --seed 1234 --metrics total_vocab_freq voc --save-path DIR \\
        --train-tokens 150000000000 --global-batch-size 512 --num-layers 24 \\
        --data-efficiency-curriculum-learning --curriculum-metric seqtru voc ... --random-ltd ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data_efficiency.analyzer import metrics as _metrics  # noqa: E402
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer  # noqa: E402
from megatron.data_efficiency.analyzer.bert_samples import BertSampleParams, run_bert_analyzer  # noqa: E402
from megatron.data_efficiency.analyzer.blend import run_blend_analyzer  # noqa: E402
from megatron.data_efficiency.analyzer.cli_args import add_training_set_args  # noqa: E402
from megatron.data_efficiency.analyzer.comm import launched_by_mpi, world  # noqa: E402

_RUN_SIZING = """run sizing (--granularity sample):
  Instead of --train-samples N, give the flags that size the training run, exactly as
  pretrain_gpt.py / pretrain_bert.py (--model bert) get them; the sample count then comes
  from megatron.run_plan.plan_run, the function training sizes itself with, so the index
  always fits the run. Any flag this tool does not take is read as a training flag. Those
  that change the count: --train-iters / --train-samples / --train-tokens,
  --global-batch-size, --num-layers, the curriculum flags
  (--data-efficiency-curriculum-learning --curriculum-metric --curriculum-total-steps ...)
  and random-LTD flags (--random-ltd --random-ltd-min-seqlen --random-ltd-total-steps ...)
  or --data-efficiency-config / --deepspeed_config, and --eval-interval --eval-iters
  --eval-full (validation samples). Flags training requires but that do not change the
  count (--hidden-size --num-attention-heads --micro-batch-size --lr) may be left out.

"""

_USER_CONTRACT = """user metrics (--metric-fn [name=]module:function):
  def function(tokens, offsets) -> array-like
    tokens:  1-D numpy array of token ids holding a batch of n samples back to back
    offsets: int64 array [n + 1]; sample k is tokens[offsets[k]:offsets[k+1]]
    return:  n finite real numbers, one per sample (ints stored as int64, floats as float64)
  It must depend only on each sample's tokens (batching varies with the number of ranks).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=_RUN_SIZING + _USER_CONTRACT,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", nargs="+", required=True,
                   help="token store prefix (no .bin/.idx), or a blend's weights and prefixes "
                        "w1 p1 w2 p2 ... as training gets them (--granularity sample)")
    p.add_argument("--save-path", required=True, help="output folder")
    p.add_argument("--granularity", choices=["document", "sample"], default="document")
    p.add_argument("--metrics", nargs="+", default=["seqlen"],
                   help=f"built-in metrics, any of {list(_metrics.BUILTIN_METRICS)}, and the "
                        f"model-based loss, ppl (with --reference-load)")
    p.add_argument("--metric-fn", nargs="+", action="extend", default=[],
                   help="user metric(s) as [name=]module:function (contract below)")
    add_training_set_args(p, train_samples_help="training samples to index; or give the "
                          "training run's sizing flags instead (see 'run sizing' below)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size (default: largest token id + 1)")
    p.add_argument("--pad-token-id", type=int, help="token excluded from seqlen")
    p.add_argument("--shard-tokens", type=int, default=1 << 24, help="tokens per resumable map shard")
    p.add_argument("--chunk-tokens", type=int, default=1 << 18, help="tokens per vectorised chunk")
    p.add_argument("--batch-tokens", type=int, default=1 << 20, help="tokens per --metric-fn call")
    p.add_argument("--num-workers", type=int, default=1,
                   help="without mpiexec: launch this many local MPI ranks")
    p.add_argument("--force", action="store_true",
                   help="recompute finished shards, and replace indexes in --save-path made "
                        "with other data or settings (refused without it)")
    p.add_argument("--keep-work", action="store_true", help="keep the shard files after success")
    p.add_argument("--quiet", action="store_true",
                   help="print errors only: hides the per-shard and per-batch progress "
                        "(rate, ETA), the dataset builder's lines and the final summary")
    p.add_argument("--stats-json", help="write wall time and peak memory of every rank to this file")
    g = p.add_argument_group("model-based metrics (--metrics loss ppl proto_dist)",
                             "--granularity document reads each document as windows of "
                             "--seq-length + 1 tokens (default: the reference's --seq-length)")
    g.add_argument("--reference-load", metavar="CKPT",
                   help="checkpoint folder of this codebase (any TP/PP layout) that scores "
                        "samples or documents")
    g.add_argument("--reference-iteration", type=int, help="default: the checkpoint's latest")
    g.add_argument("--reference-batch-size", type=int, default=8,
                   help="samples (document windows) per forward pass")
    g.add_argument("--reference-device", default=None,
                   help="torch device (default: cuda:<local rank> if available, else cpu)")
    g.add_argument("--kmeans-clusters", type=int, help="proto_dist: number of k-means centroids")
    g.add_argument("--kmeans-fit-samples", type=int, default=20000,
                   help="proto_dist: samples (drawn with --seed) the centroids are fitted on")
    args, training_flags = p.parse_known_args(argv)
    if training_flags:
        args.train_samples = _train_samples_from_training_flags(p, args, training_flags)
    if len(args.data_path) != 1:
        _check_blend_args(p, args)
    if args.model == "bert" and args.granularity != "sample":
        p.error("--model bert needs --granularity sample (BERT samples are sentence groups)")
    _check_model_metric_args(p, args)
    for name in ("shard_tokens", "chunk_tokens", "batch_tokens", "num_workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def _check_blend_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A blended ``--data-path w1 p1 w2 p2 ...`` is indexed as training blends it: its
    GPT training samples (megatron/data_efficiency/analyzer/blend.py)."""
    from megatron.data.dataset_utils import get_datasets_weights_and_num_samples
    try:
        get_datasets_weights_and_num_samples(args.data_path, [0, 0, 0])
    except ValueError as err:
        p.error(str(err))
    if args.granularity != "sample" or args.model != "gpt":
        p.error(f"--data-path {' '.join(args.data_path)}: a blend is indexed by its GPT "
                f"training samples (--granularity sample --model gpt; not --granularity "
                f"{args.granularity} --model {args.model})")


# Flags every training run must give but that do not change its sample count.
_SIZING_PLACEHOLDERS = {"--hidden-size": "8", "--num-attention-heads": "1",
                        "--micro-batch-size": "1", "--lr": "1e-4"}


def _train_samples_from_training_flags(p: argparse.ArgumentParser, args: argparse.Namespace,
                                       flags: list[str]) -> int:
    """The training samples a ``pretrain_*.py`` run with ``flags`` builds (its own sizing:
    ``megatron.run_plan.plan_run``), so the index always fits the run."""
    from megatron.arguments import ArgumentValidationError, run_config
    from megatron.core.enums import ModelType
    from megatron.run_plan import plan_run
    if args.granularity != "sample":
        p.error(f"training flags {flags} only size --granularity sample")
    given = set(flags)
    train = list(flags) + ["--data-path", *args.data_path, "--split", args.split,
                           "--seed", str(args.seed)]
    if args.seq_length is not None:
        train += ["--seq-length", str(args.seq_length)]
        if "--max-position-embeddings" not in given:
            train += ["--max-position-embeddings", str(args.seq_length)]
    if args.train_samples is not None:     # then it is the run's --train-samples
        train += ["--train-samples", str(args.train_samples)]
    for flag, value in _SIZING_PLACEHOLDERS.items():
        if flag not in given:
            train += [flag, value]
    extra, defaults = None, None
    if args.model == "bert":
        from megatron.data.bert_flags import BERT_ARGS_DEFAULTS, add_bert_args
        extra, defaults = add_bert_args, dict(BERT_ARGS_DEFAULTS)
    quiet = contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext()
    try:
        with quiet:
            plan = plan_run(run_config(train, extra, defaults),
                            ModelType.encoder if args.model == "bert"
                            else ModelType.encoder_or_decoder)
    except (ArgumentValidationError, ValueError) as err:
        p.error(f"training flags {' '.join(flags)}: {err}")
    if not args.quiet:
        print(f"[analyzer] the training run takes {plan.train_iters} steps: "
              f"{plan.train_valid_test_num_samples[0]} training samples", file=sys.stderr)
    return plan.train_valid_test_num_samples[0]


def _check_model_metric_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from megatron.data_efficiency.analyzer.model_metrics import MODEL_METRICS
    wanted = [m for m in args.metrics if m in MODEL_METRICS + ("proto_dist",)]
    if ("proto_dist" in wanted) != (args.kmeans_clusters is not None):
        p.error("--metrics proto_dist goes with --kmeans-clusters K (and K with proto_dist)")
    if args.kmeans_clusters is not None and args.kmeans_clusters < 1:
        p.error("--kmeans-clusters must be positive")
    if wanted and (args.reference_load is None or args.model != "gpt"):
        p.error(f"--metrics {' '.join(wanted)} needs --reference-load CKPT (a GPT checkpoint) "
                f"and GPT samples or documents (--model gpt)")
    if not wanted and args.reference_load is not None:
        p.error("--reference-load needs --metrics loss, ppl and/or proto_dist")
    if args.reference_batch_size < 1:
        p.error("--reference-batch-size must be positive")


def _model_metrics(args: argparse.Namespace, comm, cfg: AnalyzerConfig) -> tuple:
    """(source or None, the --metrics loss / ppl / proto_dist callables over the reference
    model, loaded once per rank). proto_dist fits its centroids here (a collective)."""
    from megatron.data_efficiency.analyzer.analyzer import build_source
    from megatron.checkpointing.whole_model import load_model
    from megatron.data_efficiency.analyzer.model_metrics import (MODEL_METRICS, TokenLossMetric,
                                                                 reference_model)
    wanted = [m for m in args.metrics if m in MODEL_METRICS]
    if not wanted and args.kmeans_clusters is None:
        return None, ()
    import torch
    device = args.reference_device or (
        f"cuda:{comm.rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    ref = reference_model(load_model(args.reference_load, args.reference_iteration,
                                     device=device))
    # documents are read as windows of --seq-length (default: the reference's) + 1 tokens
    window = (args.seq_length or ref.seq_length) if args.granularity == "document" else None
    out = [TokenLossMetric(ref, m, args.reference_batch_size, window) for m in wanted]
    source = None
    if args.kmeans_clusters is not None:
        from megatron.data_efficiency.analyzer import proto_metrics
        from megatron.data_efficiency.analyzer.blend import build_blend_source
        source = build_blend_source(cfg) if cfg.data_path else build_source(cfg)
        centroids = proto_metrics.fit_centroids(ref, source, comm, args.kmeans_clusters,
                                                args.kmeans_fit_samples, args.seed,
                                                args.reference_batch_size, window,
                                                show_progress=not args.quiet)
        out.append(proto_metrics.ProtoDistMetric(ref, centroids, args.reference_batch_size, {
            "kmeans_fit_samples": args.kmeans_fit_samples, "kmeans_seed": args.seed}, window))
    return source, tuple(out)


def _check_store(args: argparse.Namespace, model_metrics: tuple) -> None:
    """The store's tokenizer record against what this run knows of its tokenizer: the
    reference model's (model metrics) and ``--vocab-size`` (megatron/data/provenance.py).
    A store without a record is not scanned here: the count pass reads every id anyway."""
    from megatron.data import provenance
    from megatron.tokenizer.identity import NULL_TYPE
    known = [m.ref.tokenizer for m in model_metrics if getattr(m, "ref", None) is not None
             and m.ref.tokenizer is not None][:1]
    if args.vocab_size is not None:
        known.append({"type": NULL_TYPE, "vocab_size": args.vocab_size})
    prefixes = args.data_path if len(args.data_path) == 1 else args.data_path[1::2]
    for prefix in prefixes:
        if provenance.read_record(prefix) is None:
            if not args.quiet:
                provenance.warn_if_unrecorded(prefix)
            continue
        for identity in known:
            provenance.check_store(prefix, identity)


def _relaunch(num_workers: int, argv: list[str]) -> int:
    """Re-run this script under mpiexec with ``num_workers`` ranks."""
    mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        print("error: --num-workers > 1 needs mpiexec (mpi4py + MPICH); none found", file=sys.stderr)
        return 2
    cmd = [mpiexec, "-n", str(num_workers), sys.executable, os.path.abspath(__file__)] + argv
    return subprocess.call(cmd)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; counts resident pages of the mapped tokens).

    Read from /proc rather than getrusage, whose ru_maxrss survives exec and so may report the
    launching parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _abort_others(comm, code: int) -> None:
    if comm.size > 1:
        sys.stderr.flush()
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.num_workers > 1 and not launched_by_mpi():
        return _relaunch(args.num_workers, argv)
    from megatron.data_efficiency.analyzer.model_metrics import MODEL_METRICS
    comm = world()
    blend = len(args.data_path) > 1
    cfg = AnalyzerConfig(
        data_prefix=" ".join(args.data_path), save_path=args.save_path,
        data_path=tuple(args.data_path) if blend else (),
        metrics=tuple(m for m in args.metrics if m not in MODEL_METRICS + ("proto_dist",)),
        metric_fns=tuple(args.metric_fn), granularity=args.granularity, split=args.split,
        seq_length=args.seq_length, seed=args.seed, train_samples=args.train_samples,
        vocab_size=args.vocab_size, pad_token_id=args.pad_token_id, shard_tokens=args.shard_tokens,
        chunk_tokens=args.chunk_tokens, batch_tokens=args.batch_tokens, force=args.force,
        keep_work=args.keep_work, cache_dir=args.data_cache_path, progress=not args.quiet)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
            source, model_metrics = _model_metrics(args, comm, cfg)
    except (ValueError, FileNotFoundError) as e:     # a missing or unreadable checkpoint
        print(f"error (rank {comm.rank}): {e}", file=sys.stderr, flush=True)
        _abort_others(comm, 2)
        return 2
    try:
        _check_store(args, model_metrics)
    except (ValueError, FileNotFoundError) as e:
        print(f"error (rank {comm.rank}): {e}", file=sys.stderr, flush=True)
        _abort_others(comm, 2)
        return 2
    cfg = dataclasses.replace(cfg, model_metrics=model_metrics)
    # Ranks start (interpreter, imports, MPI init) at different moments; without this barrier
    # the first rank would count its wait for the last one's start-up as analysis time.
    comm.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        # --quiet: the dataset builders' " > dataset ..." lines (stdout) go too
        with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
            if blend:
                stats = run_blend_analyzer(cfg, comm, source)
            elif args.model == "bert":
                stats = run_bert_analyzer(cfg, BertSampleParams(args.short_seq_prob,
                                                                args.bert_binary_head), comm)
            else:
                stats = run_analyzer(cfg, comm, source)
    except (ValueError, FileNotFoundError) as e:
        print(f"error (rank {comm.rank}): {e}", file=sys.stderr, flush=True)
        _abort_others(comm, 2)
        return 2
    except BaseException:
        traceback.print_exc()
        _abort_others(comm, 1)  # the other ranks would wait forever in the next collective
        raise
    ranks = comm.allgather({"rank": comm.rank, "elapsed_s": time.perf_counter() - start,
                            "cpu_s": time.process_time() - cpu_start, "peak_rss_mb": peak_rss_mb(),
                            "phases_s": stats.pop("phases_s", {})})
    if comm.rank == 0:
        stats.update(elapsed_s=max(r["elapsed_s"] for r in ranks), ranks=ranks)
        if not args.quiet:
            work = (f"{stats['num_samples']} BERT samples" if args.model == "bert" else
                    f"{stats['shards_computed']} shards computed, {stats['shards_reused']} reused "
                    "from an earlier run")
            print(f"[analyzer] done in {stats['elapsed_s']:.2f} s: {work}; peak RSS per rank "
                  + ", ".join(f"{r['peak_rss_mb']:.0f} MiB" for r in ranks), file=sys.stderr)
        if args.stats_json:
            with open(args.stats_json + ".tmp", "w") as f:
                json.dump(stats, f, indent=1)
            os.replace(args.stats_json + ".tmp", args.stats_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
