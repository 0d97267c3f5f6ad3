"""The analyzer over BERT training samples (``tools/analyze_data.py --granularity sample
--model bert``).

Sample ids are the BertDataset indices of the training split (rows of its shuffled samples
mapping), i.e. what the curriculum sampler draws. Metrics (definitions in
``sources.BertSampleSource``): ``seqlen`` (real tokens incl. ``[CLS]``/``[SEP]``), ``voc``
(rarity of the unmasked sentence tokens, scaled to the kept length), ``seqlen_voc`` and
``total_vocab_freq`` (histogram of the training split's sentence tokens, which defines
``p`` for ``voc``).

One streaming pass per additive metric over the split's tokens, split across the ranks by
sentence ranges; the per-sentence sums are all-reduced (8 bytes per sentence), then every
rank computes its block of samples from prefix differences and the shared sample-sort
writer publishes the index. Unlike the GPT path there are no resumable shards: the work is
two passes over the tokens. User ``--metric-fn`` metrics are not supported for BERT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megatron.data_efficiency.analyzer import kernels
from megatron.data_efficiency.analyzer.analyzer import (COUNTED_METRICS, AnalyzerConfig,
                                                        full_range_lut, publish_indexes,
                                                        seqlen_voc_entry, write_counts)
from megatron.data_efficiency.analyzer.index_checks import refuse_replacing
from megatron.data_efficiency.analyzer.comm import Comm, world
from megatron.data_efficiency.analyzer.index_io import dataset_fingerprint
from megatron.data_efficiency.analyzer.sources import BertSampleSource

BERT_METRICS = ("seqlen", "total_vocab_freq", "voc", "seqlen_voc")


@dataclass(frozen=True)
class BertSampleParams:
    """The BERT dataset arguments that decide the samples (pretrain_bert.py's flags)."""
    short_seq_prob: float = 0.1      # --short-seq-prob
    binary_head: bool = True         # not --bert-no-binary-head


def bert_samples_fingerprint(data_prefix: str, split: str, seq_length: int, seed: int,
                             samples_mapping: np.ndarray) -> str:
    """The fingerprint of a BERT training set's samples: what the analyzer writes into its
    index and what training must expect (``pretrain_bert.BertSamples``: pass the train
    BertDataset's ``samples_mapping``). The mapping is hashed whole, so it covers
    ``--short-seq-prob``, the binary head and whatever ``--train-samples`` built it."""
    return dataset_fingerprint([data_prefix], "sample", split, seq_length, seed,
                               len(samples_mapping), sample_maps=(samples_mapping,))


class _MappingOnlyTokenizer:
    """BertDataset wants special ids; the samples mapping (all the analyzer reads) does not
    depend on them, so placeholders stand in and ``__getitem__`` is never called."""
    cls = sep = mask = pad = -1
    vocab_size = 0


def build_bert_source(cfg: AnalyzerConfig, params: BertSampleParams) -> BertSampleSource:
    """The training split's BertDataset (same cache as training) as a BertSampleSource."""
    from megatron.data.bert_dataset import BertDataset
    from megatron.data.dataset_utils import get_train_valid_test_split_
    from megatron.data.indexed_dataset import MMapIndexedDataset
    if not cfg.seq_length or not cfg.train_samples:
        raise ValueError("--granularity sample --model bert needs --seq-length and --train-samples")
    indexed = MMapIndexedDataset(cfg.data_prefix)
    bounds = get_train_valid_test_split_(cfg.split, indexed.num_documents)
    if bounds[1] <= bounds[0]:
        raise ValueError(f"--split {cfg.split!r} leaves no training documents in {cfg.data_prefix}")
    doc_idx = np.asarray(indexed.doc_idx[bounds[0]:bounds[1] + 1], dtype=np.int64)
    ds = BertDataset("train", indexed, cfg.data_prefix, doc_idx, cfg.train_samples, 0.15,
                     cfg.seq_length, params.short_seq_prob, cfg.seed, _MappingOnlyTokenizer(),
                     params.binary_head, cfg.cache_dir)
    return BertSampleSource(indexed, ds.samples_mapping, int(doc_idx[0]), int(doc_idx[-1]),
                            params.binary_head, where=cfg.data_prefix + ".bin")


def _my_range(comm: Comm, n: int) -> tuple[int, int]:
    return comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size


def _sentence_sums(src: BertSampleSource, comm: Comm, lut: np.ndarray, chunk: int) -> np.ndarray:
    """sum(lut[token]) per sentence of the split, int64 [sentences], on every rank."""
    n = len(src.bounds) - 1
    a, z = _my_range(comm, n)
    out = np.zeros(n, dtype=np.int64)
    if z > a:
        pos = src.bounds[a:z + 1]
        t = kernels.prefix_sums_at(src.tokens, int(pos[0]), int(pos[-1]), pos, lut, src.where, chunk)
        out[a:z] = np.diff(t)
    return comm.sum_arrays_(out)


def _token_counts(src: BertSampleSource, comm: Comm, cfg: AnalyzerConfig) -> np.ndarray:
    """Histogram of the split's sentence tokens, int64 [vocab], on every rank."""
    a, z = _my_range(comm, len(src.bounds) - 1)
    mine = kernels.token_counts(src.tokens, int(src.bounds[a]), int(src.bounds[z]), src.where,
                                cfg.chunk_tokens)
    vocab = comm.allreduce_max(len(mine))
    if cfg.vocab_size is not None:
        if vocab > cfg.vocab_size:
            raise ValueError(f"{src.where}: token id {vocab - 1} >= --vocab-size {cfg.vocab_size}")
        vocab = cfg.vocab_size
    total = np.zeros(vocab, dtype=np.int64)
    total[:len(mine)] = mine
    return comm.sum_arrays_(total)


def _values(src, comm, cfg, wanted, counts, lo, hi) -> list[tuple[str, np.ndarray, dict]]:
    """(name, values of samples lo..hi-1, extra meta) for the wanted built-in metrics."""
    seqlen, kept, group = src.seqlen_and_kept(lo, hi)
    out = [("seqlen", seqlen, {"specials_counted": src.specials})]
    if wanted & {"voc", "seqlen_voc"}:
        lut = full_range_lut(kernels.voc_lut(counts), src.tokens)
        acc = src.group_sums(_sentence_sums(src, comm, lut, cfg.chunk_tokens), lo, hi)
        acc = acc * kept // np.maximum(group, 1)   # exact int64: scaled to the kept tokens
        out.append(("voc", kernels.voc_from_fixed(acc),
                    {"voc_fraction_bits": kernels.VOC_FRACTION_BITS,
                     "voc_definition": "unmasked sentence tokens, scaled by kept/group tokens"}))
        if "seqlen_voc" in wanted:
            out.append(seqlen_voc_entry(comm, seqlen, acc))
    return [entry for entry in out if entry[0] in wanted]


def run_bert_analyzer(cfg: AnalyzerConfig, params: BertSampleParams, comm: Comm | None = None,
                      source: BertSampleSource | None = None) -> dict:
    """Index BERT training samples by ``cfg.metrics`` (call on every rank).

    Returns:
        Run statistics (``num_samples``).
    """
    comm = comm or world()
    unknown = [m for m in cfg.metrics if m not in BERT_METRICS]
    if unknown or cfg.metric_fns:
        raise ValueError(f"--model bert supports --metrics {list(BERT_METRICS)} only "
                         f"(got {unknown or list(cfg.metric_fns)}; no --metric-fn)")
    if cfg.pad_token_id is not None:
        raise ValueError("--pad-token-id does not apply to --model bert: BERT seqlen counts the "
                         "real tokens of each sample, padding is never part of it")
    src = source if source is not None else build_bert_source(cfg, params)
    fingerprint = comm.bcast(bert_samples_fingerprint(
        cfg.data_prefix, cfg.split, cfg.seq_length, cfg.seed, src.mapping) if comm.rank == 0 else None)
    wanted = set(cfg.metrics)
    base = {"granularity": "sample", "model": "bert", "short_seq_prob": params.short_seq_prob,
            "binary_head": params.binary_head}
    refuse_replacing(cfg, comm, fingerprint, {m: ({} if m == "total_vocab_freq" else base)
                                              for m in wanted})
    counts = _token_counts(src, comm, cfg) if wanted & COUNTED_METRICS else None
    if "total_vocab_freq" in wanted:
        write_counts(cfg, comm, fingerprint, counts)
    lo, hi = _my_range(comm, src.num_samples)
    publish_indexes(cfg, comm, lo, _values(src, comm, cfg, wanted, counts, lo, hi), fingerprint,
                    {**base, "data_prefix": cfg.data_prefix})
    comm.barrier()
    cfg.stats.update(num_samples=src.num_samples, fingerprint=fingerprint)
    return cfg.stats
