"""The map-reduce data analyzer: per-sample metrics -> sorted CSR index files (see index_io).

Map: every rank streams its contiguous block of shards of the token store (bounded-memory
chunks, no Python loop per sample) and saves each finished shard, so a killed job resumes.
Reduce: token histograms by an all-reduce; per-sample values by a distributed sample sort
whose slices every rank writes into the shared output files (sort_write). The outputs are
byte-identical for any number of ranks.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.data_efficiency.analyzer import kernels, metrics
from megatron.data_efficiency.analyzer.comm import Comm, world
from megatron.data_efficiency.analyzer.index_checks import refuse_replacing
from megatron.data_efficiency.analyzer.index_io import dataset_fingerprint, publish_dir, new_tmp_dir, save_npy
from megatron.data_efficiency.analyzer.sample_metrics import SampleMetrics
from megatron.data_efficiency.analyzer.shards import (Progress, ShardStore, my_block, my_weighted_block,
                                                      plan_range_shards, plan_unit_shards, run_rounds)
from megatron.data_efficiency.analyzer.sort_write import write_index_parallel
from megatron.data_efficiency.analyzer.sources import DocumentSource, GPTSampleSource


@dataclass
class AnalyzerConfig:
    """What to analyze and where to write it (mirrors tools/analyze_data.py flags)."""
    data_prefix: str
    save_path: str
    data_path: tuple[str, ...] = ()           # a blend's "w1 p1 w2 p2 ..." (blend.py)
    metrics: tuple[str, ...] = ("seqlen",)
    metric_fns: tuple[str, ...] = ()          # "[name=]module:function"
    model_metrics: tuple = ()                 # callables with .name, .cache_tag, .meta
                                              # (model_metrics.TokenLossMetric)
    granularity: str = "document"             # "document" | "sample"
    split: str = "969,30,1"
    seq_length: int | None = None
    seed: int = 1234
    train_samples: int | None = None
    vocab_size: int | None = None
    pad_token_id: int | None = None
    shard_tokens: int = 1 << 24
    chunk_tokens: int = kernels.CHUNK_TOKENS
    batch_tokens: int = 1 << 20               # tokens per user-metric call
    force: bool = False
    keep_work: bool = False
    cache_dir: str | None = None
    progress: bool = True
    fail_after_shards: int | None = None      # test hook: stop after this many new shards
    stats: dict = field(default_factory=dict)


def build_source(cfg: AnalyzerConfig):
    """The DocumentSource or GPTSampleSource for ``cfg`` (builds the GPT sample index)."""
    if cfg.granularity == "document":
        return DocumentSource(MMapIndexedDataset(cfg.data_prefix))
    if cfg.granularity != "sample":
        raise ValueError(f"--granularity must be 'document' or 'sample', got {cfg.granularity!r}")
    if not cfg.seq_length or not cfg.train_samples:
        raise ValueError("--granularity sample needs --seq-length and --train-samples")
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    train, _, _ = build_train_valid_test_datasets([cfg.data_prefix], cfg.split, [cfg.train_samples, 0, 0],
                                                  cfg.seq_length, cfg.seed, cache_dir=cfg.cache_dir)
    if train is None:
        raise ValueError(f"--split {cfg.split!r} leaves no training documents in {cfg.data_prefix}")
    return GPTSampleSource(train.indexed_dataset, train.documents, train.doc_idx, train.sample_idx,
                           train.shuffle_idx, where=cfg.data_prefix + ".bin")


def fingerprint_of(cfg: AnalyzerConfig, source=None) -> str:
    """dataset_fingerprint of this config's data; for GPT samples it covers the sample
    maps themselves (``source``, built from ``cfg`` when not given), which is what the
    training run compares against."""
    if cfg.granularity != "sample":
        return dataset_fingerprint([cfg.data_prefix], cfg.granularity)
    source = source if source is not None else build_source(cfg)
    if not isinstance(source, GPTSampleSource):
        return dataset_fingerprint([cfg.data_prefix], cfg.granularity, cfg.split,
                                   cfg.seq_length, cfg.seed, cfg.train_samples)
    return gpt_samples_fingerprint(cfg.data_prefix, cfg.split, cfg.seq_length, cfg.seed,
                                   source.doc_idx, source.sample_idx, source.shuffle_idx)


def gpt_samples_fingerprint(data_prefix: str, split: str, seq_length: int, seed: int,
                            doc_idx: np.ndarray, sample_idx: np.ndarray,
                            shuffle_idx: np.ndarray) -> str:
    """The fingerprint of a GPT training set's samples: what the analyzer writes into a
    sample-granularity index and what training expects of it
    (``data_family.GPTSamples``)."""
    return dataset_fingerprint([data_prefix], "sample", split, seq_length, seed,
                               len(shuffle_idx), sample_maps=(doc_idx, sample_idx, shuffle_idx))


def open_work(cfg: AnalyzerConfig, comm: Comm, fingerprint: str) -> tuple[str, ShardStore]:
    """The run's folder of resumable shards (``--force``: emptied first) and its store;
    rank 0 also removes index folders a killed run never published (collective)."""
    work = os.path.join(cfg.save_path, ".analyzer_work", f"{fingerprint}-{cfg.shard_tokens}")
    if comm.rank == 0:
        if cfg.force and os.path.isdir(work):
            shutil.rmtree(work)
        os.makedirs(work, exist_ok=True)
        for stale in glob.glob(os.path.join(cfg.save_path, "*.tmp-" + "[0-9a-f]" * 8)):
            if os.path.isdir(stale):  # an index folder a killed run never published
                shutil.rmtree(stale, ignore_errors=True)
    comm.barrier()
    return work, ShardStore(work, cfg.fail_after_shards)


class _Run(SampleMetrics):
    """State of one analyzer run on one rank."""

    def __init__(self, cfg: AnalyzerConfig, comm: Comm, source) -> None:
        self.cfg, self.comm, self.src = cfg, comm, source
        self.fingerprint = comm.bcast(fingerprint_of(cfg, source) if comm.rank == 0 else None)
        self.work, self.store = open_work(cfg, comm, self.fingerprint)
        self.unit_shards = plan_unit_shards(source.bounds, cfg.shard_tokens)
        self.my_units = my_weighted_block(comm, np.diff(source.bounds[self.unit_shards]))
        if source.granularity == "sample":
            per = max(1, cfg.shard_tokens // (cfg.seq_length + 1))
            self.out_shards = plan_range_shards(source.num_samples, per)
            self.boundary_unit, self.boundary_off = source.boundary_units()
            self._check_offsets()
            self._by_unit = np.argsort(self.boundary_unit, kind="stable")  # boundaries grouped by unit
            self._units_sorted = self.boundary_unit[self._by_unit]
            blk = my_block(comm, len(self.out_shards) - 1)
        else:
            self.out_shards, blk = self.unit_shards, self.my_units  # values follow the map blocks
        self.my_out = blk
        self.lo, self.hi = int(self.out_shards[blk.start]), int(self.out_shards[blk.stop])

    def _check_offsets(self) -> None:
        lengths = np.diff(self.src.bounds)[self.boundary_unit]
        bad = np.flatnonzero(self.boundary_off > lengths)
        if len(bad):
            raise ValueError(f"{self.src.where}: sample_idx boundary {int(bad[0])} has offset "
                             f"{int(self.boundary_off[bad[0]])} beyond its document")

    def _unit_tokens(self, s: int) -> int:
        b = self.src.bounds
        return int(b[self.unit_shards[s + 1]] - b[self.unit_shards[s]])

    # -- pass 1: token histogram ------------------------------------------------------------
    def counts(self) -> np.ndarray:
        """Global token histogram, int64 [vocab]."""
        b, mine = self.src.bounds, []

        def work(s: int) -> int:
            lo, hi = int(b[self.unit_shards[s]]), int(b[self.unit_shards[s + 1]])
            mine.append(self.store.get(f"counts-{s}", lambda: {"c": kernels.token_counts(
                self.src.tokens, lo, hi, self.src.where, self.cfg.chunk_tokens)})["c"])
            return hi - lo

        run_rounds(self.comm, self.my_units, work, self._progress("token counts"))
        vocab = self.comm.allreduce_max(max([len(c) for c in mine], default=0))
        if self.cfg.vocab_size is not None:
            if vocab > self.cfg.vocab_size:
                raise ValueError(f"{self.src.where}: token id {vocab - 1} >= --vocab-size {self.cfg.vocab_size}")
            vocab = self.cfg.vocab_size
        total = np.zeros(vocab, dtype=np.int64)
        for c in mine:
            total[:len(c)] += c
        return self.comm.sum_arrays_(total)

    def _progress(self, label: str) -> Progress:
        total = int(self.src.bounds[-1] - self.src.bounds[0]) if self.src.num_units else 0
        return Progress(self.comm, label, total, enabled=self.cfg.progress)

    # -- pass 2: additive metrics (seqlen, rarity) ------------------------------------------
    def _unit_shard(self, s: int, lut: np.ndarray) -> dict:
        """Unit sums of shard s and, for GPT samples, the within-unit prefixes at its boundaries."""
        ulo, uhi = int(self.unit_shards[s]), int(self.unit_shards[s + 1])
        b = self.src.bounds
        pos = [b[ulo:uhi + 1]]
        out = {}
        if self.src.granularity == "sample":
            ks = self._by_unit[np.searchsorted(self._units_sorted, ulo):np.searchsorted(self._units_sorted, uhi)]
            u, o = self.boundary_unit[ks], self.boundary_off[ks]
            qs, qe = b[u] + o, b[u] + np.minimum(o + 1, b[u + 1] - b[u])
            pos += [qs, qe]
            out["k"] = ks
        positions = kernels.sorted_unique(np.concatenate(pos))
        t = kernels.prefix_sums_at(self.src.tokens, int(b[ulo]), int(b[uhi]), positions, lut,
                                   self.src.where, self.cfg.chunk_tokens)
        at = lambda x: t[np.searchsorted(positions, x)]  # noqa: E731
        out["w"] = np.diff(at(b[ulo:uhi + 1]))
        if self.src.granularity == "sample":
            out["ps"], out["pe"] = at(qs) - at(b[u]), at(qe) - at(b[u])
        return out

    def additive(self, tag: str, lut: np.ndarray | None) -> np.ndarray:
        """Per-sample sums of ``lut[token]`` (token counts if None) for samples lo..hi-1, int64."""
        if self.src.granularity == "document":
            return self._document_sums(tag, lut)
        return self.src.sample_values(np.arange(self.lo, self.hi, dtype=np.int64),
                                      *self.sample_prefixes(tag, lut))

    def _document_sums(self, tag: str, lut: np.ndarray | None) -> np.ndarray:
        if lut is None:
            return np.diff(self.src.bounds[self.lo:self.hi + 1]).astype(np.int64)
        shards = self._unit_sums(tag, lut)
        return np.concatenate([shards[s]["w"] for s in self.my_units] + [np.zeros(0, np.int64)])

    def _unit_sums(self, tag: str, lut: np.ndarray) -> dict[int, dict]:
        """This rank's map shards of ``lut[token]`` sums (``_unit_shard``), resumable."""
        shards: dict[int, dict] = {}

        def work(s: int) -> int:
            shards[s] = self.store.get(f"sum-{tag}-{s}", lambda: self._unit_shard(s, lut))
            return self._unit_tokens(s)
        run_rounds(self.comm, self.my_units, work, self._progress(f"{tag} sums"))
        return shards

    def sample_prefixes(self, tag: str, lut: np.ndarray | None) -> tuple:
        """``(prefix_order, p_start, p_end)`` of ``GPTSampleSource.sample_values`` for the
        sums of ``lut[token]`` (token counts if None), the same on every rank (collective):
        any sample's value follows from them (a blend reads its stores' samples so)."""
        if lut is None:
            lengths = np.diff(self.src.bounds)
            w, ps = lengths, self.boundary_off.copy()
            pe = np.minimum(ps + 1, lengths[self.boundary_unit])
        else:
            w = np.zeros(self.src.num_units, np.int64)
            ps, pe = np.zeros((2, len(self.boundary_unit)), np.int64)
            for s, sh in self._unit_sums(tag, lut).items():
                w[self.unit_shards[s]:self.unit_shards[s + 1]] = sh["w"]
                ps[sh["k"]], pe[sh["k"]] = sh["ps"], sh["pe"]
            for arr in (w, ps, pe):
                self.comm.sum_arrays_(arr)
        return self.src.unit_prefix_order(w), ps, pe


def _seqlen_lut(cfg: AnalyzerConfig, src, counts: np.ndarray | None) -> np.ndarray | None:
    """Per-token seqlen contribution: None (every token counts) unless a pad id is excluded."""
    if cfg.pad_token_id is None:
        return None
    if counts is not None:
        vocab = len(counts)
    elif cfg.vocab_size is not None:
        vocab = cfg.vocab_size
    elif src.tokens.dtype.itemsize <= 2 and src.tokens.dtype.kind == "u":
        vocab = 1 << (8 * src.tokens.dtype.itemsize)
    else:
        raise ValueError("--pad-token-id with int32 tokens needs --vocab-size")
    lut = np.ones(max(vocab, cfg.pad_token_id + 1), dtype=np.int64)
    lut[cfg.pad_token_id] = 0
    return lut


def _lut_tag(name: str, lut: np.ndarray) -> str:
    return f"{name}-{hashlib.sha256(lut.tobytes()).hexdigest()[:12]}"


# metrics that need the token histogram (its pass over the tokens)
COUNTED_METRICS = frozenset({"voc", "total_vocab_freq", "seqlen_voc"})


def write_counts(cfg: AnalyzerConfig, comm: Comm, fingerprint: str, counts: np.ndarray) -> None:
    """DIR/total_vocab_freq/counts.npy (+ meta.json), from rank 0 (it is vocab-sized)."""
    if comm.rank == 0:
        final = os.path.join(cfg.save_path, "total_vocab_freq")
        tmp = new_tmp_dir(final)
        save_npy(os.path.join(tmp, "counts.npy"), counts)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            f.write(f'{{"fingerprint": "{fingerprint}", "metric": "total_vocab_freq", '
                    f'"num_tokens": {int(counts.sum())}, "vocab_size": {len(counts)}}}\n')
        publish_dir(tmp, final)
    comm.barrier()


def planned_settings(cfg: AnalyzerConfig, user: list = ()) -> dict[str, dict]:
    """``{metric folder: meta.json settings}`` this run writes (``refuse_replacing``)."""
    same = {"granularity": cfg.granularity}
    planned = {m: {**same, **({"pad_token_id": cfg.pad_token_id} if m == "seqlen" else {})}
               for m in cfg.metrics if m != "total_vocab_freq"}
    planned.update({name: {**same, "metric_fn": target} for name, target in user})
    planned.update({m.name: {**same, **{k: v for k, v in m.meta.items() if k != "reference_load"}}
                    for m in cfg.model_metrics})
    if "total_vocab_freq" in cfg.metrics:
        planned["total_vocab_freq"] = {}
    return planned


def publish_indexes(cfg: AnalyzerConfig, comm: Comm, first_id: int, out: list[tuple],
                    fingerprint: str, base: dict) -> None:
    """Write every ``(name, values of samples first_id.., extra meta)`` of ``out`` as an
    index (collective; called once every metric is computed, so nothing is published by
    a run that fails) and print its summary line."""
    for name, values, extra in out:
        write_index_parallel(comm, os.path.join(cfg.save_path, name), name, first_id, values,
                             fingerprint, {**base, **extra})
        if comm.rank == 0 and cfg.progress:
            print(f"[analyzer] {_summary(cfg, name)}", file=sys.stderr, flush=True)


def _summary(cfg: AnalyzerConfig, name: str) -> str:
    """One line: sample count, distinct values and percentiles from the index's meta.json."""
    with open(os.path.join(cfg.save_path, name, "meta.json")) as f:
        meta = json.load(f)
    pv = meta["percentile_values"]
    if not pv:
        return f"{name}: no samples"
    fmt = (lambda v: f"{v:.4g}") if meta["dtype"] == "float64" else str
    cols = ", ".join(f"p{p}={fmt(pv[p])}" for p in (0, 1, 10, 25, 50, 75, 90, 99, 100))
    return f"{name}: {meta['num_samples']:,} samples, {meta['num_values']:,} distinct values; {cols}"


def _builtin_values(run: _Run, wanted: set[str], counts: np.ndarray | None) -> list[tuple[str, np.ndarray, dict]]:
    """(name, values of samples lo..hi-1, extra meta) of seqlen / voc / seqlen_voc as needed."""
    cfg, comm, out = run.cfg, run.comm, []
    if wanted & {"seqlen", "seqlen_voc"}:
        lut = _seqlen_lut(cfg, run.src, counts)
        seqlen = run.additive("seqlen" if lut is None else _lut_tag("seqlen", lut), lut)
        out.append(("seqlen", seqlen, {"pad_token_id": cfg.pad_token_id}))
    if wanted & {"voc", "seqlen_voc"}:
        lut = full_range_lut(comm.bcast(kernels.voc_lut(counts) if comm.rank == 0 else None),
                             run.src.tokens)   # one log() for all ranks
        voc_acc = run.additive(_lut_tag("voc", lut), lut)
        out.append(("voc", kernels.voc_from_fixed(voc_acc), {"voc_fraction_bits": kernels.VOC_FRACTION_BITS}))
    if "seqlen_voc" in wanted:
        out.append(seqlen_voc_entry(comm, seqlen, voc_acc))
    return [entry for entry in out if entry[0] in wanted]


def full_range_lut(lut: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """``lut`` zero-padded to every id of ``tokens``' dtype (uint8 / uint16 stores): every
    id present was counted, so ids past the histogram never occur, and a full-range table
    lets the hot loop skip its per-chunk id check."""
    if tokens.dtype.kind == "u" and tokens.dtype.itemsize <= 2:
        return np.pad(lut, (0, max(0, (1 << 8 * tokens.dtype.itemsize) - len(lut))))
    return lut


def seqlen_voc_entry(comm: Comm, seqlen: np.ndarray, voc_acc: np.ndarray) -> tuple:
    """The ``seqlen_voc`` output ``(name, keys, meta)``: one int64 key per sample ordering
    by seqlen, then rarity, with the key layout agreed over all ranks."""
    keys, bits, shift = kernels.seqlen_voc_composite(
        seqlen, voc_acc, comm.allreduce_max(int(seqlen.max(initial=0))),
        comm.allreduce_max(int(voc_acc.max(initial=0))))
    return ("seqlen_voc", keys, {"voc_bits": bits, "voc_shift": shift,
                                 "voc_fraction_bits": kernels.VOC_FRACTION_BITS})


def run_analyzer(cfg: AnalyzerConfig, comm: Comm | None = None, source=None) -> dict:
    """Run the whole analysis on this rank (call on every rank). Returns run statistics.

    Args:
        comm: the ranks taking part (default: MPI COMM_WORLD under mpiexec, else one process).
        source: a DocumentSource / GPTSampleSource (default: built from ``cfg``).
    """
    comm = comm or world()
    unknown = [m for m in cfg.metrics if m not in metrics.BUILTIN_METRICS]
    if unknown:
        raise ValueError(f"--metrics: unknown metric(s) {unknown}; choose from {metrics.BUILTIN_METRICS} "
                         "or pass --metric-fn module:function")
    user = [metrics.parse_metric_fn(spec) for spec in cfg.metric_fns]
    for _, target in user:
        metrics.load_metric_fn(target)  # fail before any pass over the data
    clock = _PhaseClock()
    run = _Run(cfg, comm, source if source is not None else build_source(cfg))
    refuse_replacing(cfg, comm, run.fingerprint, planned_settings(cfg, user))
    clock.mark("setup")
    wanted = set(cfg.metrics)
    counts = run.counts() if wanted & COUNTED_METRICS else None
    clock.mark("count_pass")
    if "total_vocab_freq" in wanted:
        write_counts(cfg, comm, run.fingerprint, counts)
    out = _builtin_values(run, wanted, counts)
    out += [(name, run.user_metric(name, target), {"metric_fn": target}) for name, target in user]
    out += [(m.name, run.user_metric(m.name, m, m.cache_tag), m.meta) for m in cfg.model_metrics]
    clock.mark("value_pass")
    publish_indexes(cfg, comm, run.lo, out, run.fingerprint,
                    {"granularity": cfg.granularity, "data_prefix": cfg.data_prefix})
    clock.mark("sort_write")
    comm.barrier()
    remove_work(run)
    clock.mark("cleanup")
    cfg.stats.update(shards_computed=comm.allreduce_sum(run.store.computed),
                     shards_reused=comm.allreduce_sum(run.store.reused), phases_s=clock.phases)
    return cfg.stats


def remove_work(run: _Run) -> None:
    """Rank 0 deletes the run's resumable shards once its indexes are published (unless
    ``--keep-work``), and ``.analyzer_work`` when it is left empty."""
    if run.comm.rank == 0 and not run.cfg.keep_work:
        shutil.rmtree(run.work, ignore_errors=True)
        parent = os.path.dirname(run.work)
        if os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)


class _PhaseClock:
    """Wall seconds of this rank's phases (including its waits in that phase's collectives)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 6)
        self._last = now
