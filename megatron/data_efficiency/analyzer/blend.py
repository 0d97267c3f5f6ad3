"""The analyzer over a blend's training samples (``tools/analyze_data.py --data-path w1 p1
w2 p2 ... --granularity sample``).

Sample ids are the blend's own: blend sample ``i`` is sample ``dataset_sample_index[i]``
of store ``dataset_index[i]``'s ``GPTDataset`` (``megatron.data.blendable_dataset``), and
the blend is built by the function training builds it with, from the same flags (weights,
split, sequence length, seed, the run's planned sample count), so the curriculum sampler
draws exactly the ids the training blend serves.

Each store is analysed as a single store is (``analyzer._Run``: resumable map shards over
its tokens, the token histogram, the prefix sums of every additive metric); then every
rank evaluates its block of blend ids from its stores' prefix sums. ``voc``'s token
probabilities come from the histogram of every store's training documents together
(``total_vocab_freq`` is that histogram), one epoch each, as for a single store.
``--metric-fn`` and the model metrics (``loss``, ``ppl``, ``proto_dist``) read the blend's
samples themselves (``BlendSampleSource.batch``), in resumable shards of the blend's ids.

The index's fingerprint covers the blend (``blend_samples_fingerprint``): each store's
sample fingerprint (its ``.idx``, ``.bin`` length and sample maps), its weight, and the
blend's interleaving. ``meta.json`` records each store's prefix, weight, samples and
fingerprint under ``blend``, so training names what differs (``blend_difference``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from megatron.data_efficiency.analyzer import metrics
from megatron.data_efficiency.analyzer.analyzer import (COUNTED_METRICS, AnalyzerConfig, _Run,
                                                        _builtin_values, open_work,
                                                        planned_settings, publish_indexes,
                                                        remove_work, write_counts)
from megatron.data_efficiency.analyzer.comm import Comm, world
from megatron.data_efficiency.analyzer.index_checks import refuse_replacing
from megatron.data_efficiency.analyzer.sample_metrics import SampleMetrics
from megatron.data_efficiency.analyzer.shards import my_block, plan_range_shards
from megatron.data_efficiency.analyzer.sources import GPTSampleSource


def blend_description(blend, fingerprints: list[str]) -> list[dict]:
    """What an index of ``blend`` (a ``BlendableDataset`` of ``GPTDataset``) records of
    each store: its prefix, weight, training samples and sample fingerprint
    (``gpt_samples_fingerprint``, given in store order)."""
    return [{"prefix": ds.indexed_dataset.path_prefix, "weight": weight,
             "num_samples": len(ds), "fingerprint": fp}
            for ds, weight, fp in zip(blend.datasets, blend.weights, fingerprints)]


def blend_samples_fingerprint(description: list[dict], dataset_index: np.ndarray) -> str:
    """The fingerprint of a blend's samples: every store's sample fingerprint and weight
    (not its path: a store is its contents) and the interleaving ``dataset_index``."""
    h = hashlib.sha256(json.dumps([[part["weight"], part["fingerprint"]] for part in description])
                       .encode())
    h.update(f"|{len(dataset_index)}|".encode())
    h.update(np.ascontiguousarray(dataset_index, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16]


def training_blend_fingerprint(blend, split: str, seq_length: int,
                               seed: int) -> tuple[str, list[dict]]:
    """``(fingerprint, description)`` of a training run's blend (``data_family.GPTSamples``):
    what an analyzer index of it must carry."""
    from megatron.data_efficiency.analyzer.analyzer import gpt_samples_fingerprint
    fps = [gpt_samples_fingerprint(ds.indexed_dataset.path_prefix, split, seq_length, seed,
                                   ds.doc_idx, ds.sample_idx, ds.shuffle_idx)
           for ds in blend.datasets]
    description = blend_description(blend, fps)
    return blend_samples_fingerprint(description, blend.dataset_index), description


def blend_difference(index_meta: dict, run_blend: list[dict] | None, run_samples: int) -> str:
    """What differs between the samples an index numbers (its ``meta.json``) and a run's
    blend (``run_blend``: its description; None: the run reads one store)."""
    theirs = index_meta.get("blend")
    if theirs is None and run_blend is None:
        return ""
    if theirs is None:
        return (f"the index numbers the samples of one store "
                f"({index_meta.get('data_prefix')}); this run blends {len(run_blend)} stores")
    if run_blend is None:
        return (f"the index numbers a blend of {len(theirs)} stores "
                f"({', '.join(p['prefix'] for p in theirs)}); this run reads one store")
    if len(theirs) != len(run_blend):
        return (f"the index blends {len(theirs)} stores "
                f"({', '.join(p['prefix'] for p in theirs)}), this run "
                f"{len(run_blend)} ({', '.join(p['prefix'] for p in run_blend)})")
    found = []
    weights = ([p["weight"] for p in theirs], [p["weight"] for p in run_blend])
    if weights[0] != weights[1]:
        found.append(f"the index's weights are {_fmt(weights[0])}, this run's {_fmt(weights[1])}")
    for k, (a, b) in enumerate(zip(theirs, run_blend)):
        if a["fingerprint"] != b["fingerprint"]:
            found.append(f"store {k + 1} ({b['prefix']}): the index has other samples of "
                         f"{a['prefix']} ({a['num_samples']} samples; this run builds "
                         f"{b['num_samples']}): other contents, split, sequence length, "
                         f"seed or sample count")
    if index_meta.get("num_samples") != run_samples:
        found.append(f"the index numbers {index_meta.get('num_samples')} blend samples, this "
                     f"run builds {run_samples}")
    return "; ".join(found)


def _fmt(weights: list[float]) -> str:
    return "[" + ", ".join(f"{w:.6g}" for w in weights) + "]"


class BlendSampleSource:
    """A blend's training samples: one ``GPTSampleSource`` per store and the interleaving.

    Attributes:
        parts: the stores' sources, in ``--data-path`` order.
        blend: the ``BlendableDataset`` (its ``dataset_index`` [N] uint8 and
            ``dataset_sample_index`` [N] int64 number the samples).
    """

    granularity = "sample"

    def __init__(self, blend) -> None:
        self.blend = blend
        self.parts = [GPTSampleSource(ds.indexed_dataset, ds.documents, ds.doc_idx,
                                      ds.sample_idx, ds.shuffle_idx) for ds in blend.datasets]
        self.num_samples = len(blend)
        self.sample_tokens = blend.datasets[0].seq_length + 1
        # voc's table is padded for the widest store (analyzer.full_range_lut)
        self.tokens = max((p.tokens for p in self.parts),
                          key=lambda t: (t.dtype.kind != "u", t.dtype.itemsize))

    def store_samples(self, lo: int, hi: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per store: (positions among blend samples lo..hi-1, the store's sample ids)."""
        which = np.asarray(self.blend.dataset_index[lo:hi])
        inner = np.asarray(self.blend.dataset_sample_index[lo:hi], dtype=np.int64)
        return [(np.flatnonzero(which == d), inner[which == d]) for d in range(len(self.parts))]

    def batch(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of blend samples lo..hi-1 as (flat 1-D tokens, int64 offsets [hi-lo+1]):
        each store's samples of the block are consecutive ids of that store, read at once."""
        width = self.sample_tokens
        rows = np.empty((hi - lo, width), dtype=np.result_type(*(p.tokens for p in self.parts)))
        for part, (where, ids) in zip(self.parts, self.store_samples(lo, hi)):
            if len(ids):
                assert ids[-1] - ids[0] == len(ids) - 1, "a store's samples of a block are consecutive"
                rows[where] = part.batch(int(ids[0]), int(ids[-1]) + 1)[0].reshape(-1, width)
        return rows.reshape(-1), np.arange(hi - lo + 1, dtype=np.int64) * width


def build_blend_source(cfg: AnalyzerConfig) -> BlendSampleSource:
    """The training blend of ``cfg.data_path`` (built as training builds it, same cache)."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    if not cfg.seq_length or not cfg.train_samples:
        raise ValueError("--granularity sample needs --seq-length and --train-samples")
    train, _, _ = build_train_valid_test_datasets(list(cfg.data_path), cfg.split,
                                                  [cfg.train_samples, 0, 0], cfg.seq_length,
                                                  cfg.seed, cache_dir=cfg.cache_dir)
    if train is None:
        raise ValueError(f"--split {cfg.split!r} leaves no training documents in the blend")
    return BlendSampleSource(train)


class _BlendRun(SampleMetrics):
    """What ``analyzer._builtin_values`` and ``SampleMetrics`` read of a run, over the
    stores' runs: the built-in metrics from their prefix sums, the others from the blend's
    samples (``BlendSampleSource.batch``) in output shards of the blend's ids."""

    def __init__(self, cfg: AnalyzerConfig, comm: Comm, src: BlendSampleSource) -> None:
        self.cfg, self.comm, self.src = cfg, comm, src
        self.runs = [_Run(dataclasses.replace(cfg, data_prefix=ds.indexed_dataset.path_prefix),
                          comm, part) for ds, part in zip(src.blend.datasets, src.parts)]
        self.description = blend_description(src.blend, [r.fingerprint for r in self.runs])
        self.fingerprint = comm.bcast(blend_samples_fingerprint(
            self.description, src.blend.dataset_index) if comm.rank == 0 else None)
        self.work, self.store = open_work(cfg, comm, self.fingerprint)
        self.out_shards = plan_range_shards(src.num_samples,
                                            max(1, cfg.shard_tokens // src.sample_tokens))
        self.my_out = my_block(comm, len(self.out_shards) - 1)
        self.lo = int(self.out_shards[self.my_out.start])
        self.hi = int(self.out_shards[self.my_out.stop])

    def counts(self) -> np.ndarray:
        """Token histogram of every store's training documents together, int64 [vocab]."""
        per_store = [run.counts() for run in self.runs]
        total = np.zeros(max(len(c) for c in per_store), dtype=np.int64)
        for c in per_store:
            total[:len(c)] += c
        return total

    def additive(self, tag: str, lut: np.ndarray | None) -> np.ndarray:
        """Sums of ``lut[token]`` (token counts if None) of blend samples lo..hi-1, int64:
        each store's prefix sums (collective, every store on every rank) read at the
        store's samples of this block."""
        out = np.zeros(self.hi - self.lo, dtype=np.int64)
        for run, (where, ids) in zip(self.runs, self.src.store_samples(self.lo, self.hi)):
            out[where] = run.src.sample_values(ids, *run.sample_prefixes(tag, lut))
        return out


def run_blend_analyzer(cfg: AnalyzerConfig, comm: Comm | None = None,
                       source: BlendSampleSource | None = None) -> dict:
    """Index a blend's training samples by ``cfg.metrics`` (call on every rank).

    Returns:
        Run statistics (``num_samples``, ``fingerprint``, shards computed and reused).
    """
    comm = comm or world()
    unknown = [m for m in cfg.metrics if m not in metrics.BUILTIN_METRICS]
    if unknown or cfg.granularity != "sample":
        raise ValueError(f"a blended --data-path is indexed at --granularity sample (got "
                         f"--granularity {cfg.granularity}, --metrics {' '.join(cfg.metrics)})")
    user = [metrics.parse_metric_fn(spec) for spec in cfg.metric_fns]
    for _, target in user:
        metrics.load_metric_fn(target)  # fail before any pass over the data
    run = _BlendRun(cfg, comm, source if source is not None else build_blend_source(cfg))
    refuse_replacing(cfg, comm, run.fingerprint, planned_settings(cfg, user))
    wanted = set(cfg.metrics)
    counts = run.counts() if wanted & COUNTED_METRICS else None
    if "total_vocab_freq" in wanted:
        write_counts(cfg, comm, run.fingerprint, counts)
    out = _builtin_values(run, wanted, counts)
    out += [(name, run.user_metric(name, target), {"metric_fn": target}) for name, target in user]
    out += [(m.name, run.user_metric(m.name, m, m.cache_tag), m.meta) for m in cfg.model_metrics]
    publish_indexes(cfg, comm, run.lo, out, run.fingerprint,
                    {"granularity": "sample", "data_prefix": " ".join(cfg.data_path),
                     "blend": run.description})
    comm.barrier()
    for each in (run, *run.runs):
        remove_work(each)
    cfg.stats.update(num_samples=run.src.num_samples, fingerprint=run.fingerprint,
                     shards_computed=sum(comm.allreduce_sum(r.store.computed)
                                         for r in (run, *run.runs)),
                     shards_reused=sum(comm.allreduce_sum(r.store.reused) for r in (run, *run.runs)))
    return cfg.stats
