"""``--metric-fn`` and model metrics over an analyzer run's samples (``SampleMetrics``):
the function is called on batches of about ``--batch-tokens`` tokens cut from
rank-independent output shards, each shard saved when done so a killed run resumes."""

from __future__ import annotations

import os

import numpy as np

from megatron.data_efficiency.analyzer import metrics
from megatron.data_efficiency.analyzer.row_progress import RowProgress
from megatron.data_efficiency.analyzer.shards import Progress, plan_range_shards, run_rounds


class SampleMetrics:
    """``--metric-fn`` and model metrics over a run's samples, in resumable output shards.

    A run sets ``cfg``, ``comm``, ``src`` (``granularity``, ``num_samples``, ``batch(lo,
    hi)``; ``bounds`` for documents), ``out_shards`` (sample range bounds), ``my_out``
    (this rank's block of them) and ``store`` (its ``ShardStore``).
    """

    def user_metric(self, name: str, target, tag: str | None = None) -> np.ndarray:
        """Values of a --metric-fn metric (``target``: "module:function" or the callable
        itself; ``tag`` keys its resumable shards, e.g. by a model's fingerprint) for
        samples lo..hi-1 (int64, or float64 if any rank saw floats)."""
        fn = target if callable(target) else metrics.load_metric_fn(target)
        key = f"user-{name}" if tag is None else f"model-{tag}"
        parts = []
        if hasattr(fn, "progress"):   # a model metric: it reports every forward batch
            rows = [int(self.out_shards[s + 1] - self.out_shards[s]) for s in self.my_out
                    if not os.path.isfile(self.store.path(f"{key}-{s}"))]
            share = f" of rank 0's share ({self.comm.size} ranks)" if self.comm.size > 1 else ""
            fn.progress = RowProgress(f"metric {name}", sum(rows), share=share,
                                      enabled=self.cfg.progress and self.comm.rank == 0)

        def work(s: int) -> int:
            lo, hi = int(self.out_shards[s]), int(self.out_shards[s + 1])
            parts.append(self.store.get(f"{key}-{s}", lambda: {"v": self._user_shard(fn, name, lo, hi)})["v"])
            return self._sample_tokens(lo, hi)

        total = int(self.src.bounds[-1] - self.src.bounds[0]) if self.src.granularity == "document" \
            else self.src.num_samples * (self.cfg.seq_length + 1)
        run_rounds(self.comm, self.my_out, work, Progress(self.comm, f"metric {name}", total, self.cfg.progress))
        vals = np.concatenate(parts + [np.zeros(0, np.int64)])
        if self.comm.allreduce_max(int(vals.dtype.kind == "f")):
            vals = vals.astype(np.float64)
        return vals

    def _sample_tokens(self, lo: int, hi: int) -> int:
        if self.src.granularity == "document":
            return int(self.src.bounds[hi] - self.src.bounds[lo])
        return (hi - lo) * (self.cfg.seq_length + 1)

    def _user_shard(self, fn, name: str, lo: int, hi: int) -> np.ndarray:
        """Call the user function on batches of about batch_tokens tokens over samples lo..hi-1."""
        if self.src.granularity == "document":
            b = self.src.bounds
            cuts = np.searchsorted(b, np.arange(int(b[lo]), int(b[hi]), self.cfg.batch_tokens), side="right") - 1
            cuts = np.unique(np.concatenate(([lo], np.clip(cuts, lo, hi), [hi])))
        else:
            cuts = plan_range_shards(hi - lo, max(1, self.cfg.batch_tokens // (self.cfg.seq_length + 1))) + lo
        out = []
        for a, z in zip(cuts[:-1], cuts[1:]):
            tokens, offsets = self.src.batch(int(a), int(z))
            out.append(metrics.evaluate_user_metric(fn, name, tokens, offsets, int(a)))
        if any(v.dtype.kind == "f" for v in out):
            out = [v.astype(np.float64) for v in out]
        return np.concatenate(out + [np.zeros(0, out[0].dtype if out else np.int64)])
