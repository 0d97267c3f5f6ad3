"""What a "sample" is for the analyzer: documents of the token store, GPT training samples,
or BERT training samples (``BertSampleSource``, used by ``bert_samples.run_bert_analyzer``).

Both sources describe their data as *units*: contiguous token ranges of the ``.bin`` file,
``tokens[bounds[u]:bounds[u+1]]`` (documents of the store, or the sequences of the GPT split).
Additive metrics are summed per unit in one streaming pass; a GPT sample, which spans the
end of one unit, whole units and the start of another, is then a difference of two prefix
sums (see ``GPTSampleSource``).
"""

from __future__ import annotations

import numpy as np

from megatron.data_efficiency.analyzer.kernels import gather_spans


def _sequence_bounds(ds) -> np.ndarray:
    """int64 [N+1]: token position where each sequence starts, then the total token count."""
    starts = np.asarray(ds.pointers, dtype=np.int64) // ds.dtype.itemsize
    return np.append(starts, np.int64(len(ds.tokens)))


class DocumentSource:
    """Samples are the documents of the store (``doc_idx`` groups of sequences), in order."""

    granularity = "document"

    def __init__(self, ds) -> None:
        self.ds = ds
        self.tokens = ds.tokens
        self.where = ds.path_prefix + ".bin"
        self.bounds = _sequence_bounds(ds)[np.asarray(ds.doc_idx, dtype=np.int64)]  # [D+1]
        self.num_units = len(self.bounds) - 1
        self.num_samples = self.num_units

    def batch(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of samples lo..hi-1 as (flat 1-D tokens, int64 offsets [hi-lo+1])."""
        a, b = int(self.bounds[lo]), int(self.bounds[hi])
        return np.asarray(self.tokens[a:b]), self.bounds[lo:hi + 1] - a


class GPTSampleSource:
    """Samples are GPTDataset indices ``idx`` (after ``shuffle_idx``), as the sampler draws them.

    Sample ``idx`` -> ``i = shuffle_idx[idx]`` covers the boundary pair ``sample_idx[i]`` ..
    ``sample_idx[i+1]`` (see docs/CONTRACTS.md). With ``G(d, o)`` the sum of a metric over the
    first ``d`` entries of ``doc_idx`` plus the first ``o`` tokens of entry ``d``, sample i's
    value is ``G(d[i+1], o[i+1] + 1) - G(d[i], o[i])``. G needs the whole-unit sums and the
    within-unit prefix at every boundary offset, both found in the streaming unit pass.
    """

    granularity = "sample"

    def __init__(self, ds, documents: np.ndarray, doc_idx: np.ndarray, sample_idx: np.ndarray,
                 shuffle_idx: np.ndarray, where: str | None = None) -> None:
        self.ds = ds
        self.tokens = ds.tokens
        self.where = where or ds.path_prefix + ".bin"
        documents = np.asarray(documents, dtype=np.int64)
        first = int(documents[0]) if len(documents) else 0
        if len(documents) and not np.array_equal(documents, np.arange(first, first + len(documents))):
            raise ValueError(f"{self.where}: the split's documents are not a contiguous range "
                             "of sequences; the analyzer needs a contiguous split")
        self.first_unit = first
        self.bounds = _sequence_bounds(ds)[first:first + len(documents) + 1]
        self.num_units = len(documents)
        self.doc_idx = np.asarray(doc_idx)
        self.sample_idx = np.asarray(sample_idx)
        self.shuffle_idx = np.asarray(shuffle_idx)
        self.num_samples = len(self.shuffle_idx)
        if len(self.sample_idx) < self.num_samples + 1:
            raise ValueError(f"{self.where}: sample_idx has {len(self.sample_idx)} rows, "
                             f"need {self.num_samples + 1} for {self.num_samples} samples")

    def boundary_units(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit and offset of every boundary k = 0..num_samples (unshuffled order).

        Returns:
            (int64 unit index [K], int64 offset [K]).
        """
        k = self.num_samples + 1
        d = self.sample_idx[:k, 0].astype(np.int64)
        units = self.doc_idx[d].astype(np.int64) - self.first_unit
        if len(units) and (units.min() < 0 or units.max() >= self.num_units):
            raise ValueError(f"{self.where}: doc_idx refers to sequences outside the split")
        return units, self.sample_idx[:k, 1].astype(np.int64)

    def unit_prefix_order(self, unit_sums: np.ndarray) -> np.ndarray:
        """C[d] = sum of unit_sums over doc_idx[:d], int64 [len(doc_idx)+1]."""
        c = np.zeros(len(self.doc_idx) + 1, dtype=np.int64)
        np.cumsum(unit_sums[self.doc_idx.astype(np.int64) - self.first_unit], out=c[1:])
        return c

    def sample_values(self, ids: np.ndarray, prefix_order: np.ndarray, p_start: np.ndarray,
                      p_end: np.ndarray) -> np.ndarray:
        """Additive metric of samples ``ids`` from G (see class docstring).

        Args:
            ids: int64 [n] sample ids.
            prefix_order: C from ``unit_prefix_order``.
            p_start, p_end: int64 [K] within-unit prefix at offset o_k and at o_k + 1.
        """
        i = self.shuffle_idx[ids].astype(np.int64)
        d = self.sample_idx[:, 0]
        g_end = prefix_order[d[i + 1].astype(np.int64)] + p_end[i + 1]
        g_start = prefix_order[d[i].astype(np.int64)] + p_start[i]
        return g_end - g_start

    def batch(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of samples lo..hi-1 as (flat 1-D tokens, int64 offsets [hi-lo+1])."""
        i = self.shuffle_idx[lo:hi].astype(np.int64)
        df, of = self.sample_idx[i, 0].astype(np.int64), self.sample_idx[i, 1].astype(np.int64)
        dl, ol = self.sample_idx[i + 1, 0].astype(np.int64), self.sample_idx[i + 1, 1].astype(np.int64)
        nspan = dl - df + 1
        first_span = np.cumsum(nspan) - nspan
        pos = np.repeat(df - first_span, nspan) + np.arange(int(nspan.sum()))  # doc_idx position
        unit = self.doc_idx[pos].astype(np.int64) - self.first_unit
        ustart, ulen = self.bounds[unit], np.diff(self.bounds)[unit]
        span_lo = np.zeros(len(pos), dtype=np.int64)
        span_lo[first_span] = of
        span_hi = ulen.copy()
        span_hi[first_span + nspan - 1] = ol + 1
        flat = gather_spans(self.tokens, ustart + span_lo, span_hi - span_lo)
        seg = np.add.reduceat(span_hi - span_lo, first_span) if len(i) else np.zeros(0, np.int64)
        return flat, np.concatenate(([0], np.cumsum(seg))).astype(np.int64)


class BertSampleSource:
    """Samples are BertDataset indices ``idx`` (rows of its shuffled samples mapping).

    Row ``idx`` of the mapping is ``(first sentence, end sentence, target length)``: the sample
    is cut from the consecutive sentences ``first .. end-1`` of the sentence-level store, which
    are one contiguous token range. Its real tokens (``padding_mask`` 1) are the group's tokens
    truncated to ``target``, plus ``[CLS]`` and one ``[SEP]`` per segment (two with the
    binary head, one without), so both metrics below come from per-sentence sums by prefix
    differences, without a loop per sample:

    * ``seqlen = min(group tokens, target) + specials`` (exact);
    * ``voc = rarity(group) * kept // group tokens``: the rarity (sum of ``-ln p``) of the
      group's *unmasked* sentence tokens, scaled to the kept length (the group's mean rarity
      per token times the tokens kept). It is exactly the sample's rarity whenever the pair
      is not truncated; truncation trims tokens at random ends (the sample's own RNG), which
      the mapping alone cannot replay. Masking and special tokens do not count.
    """

    granularity = "bert_sample"

    def __init__(self, ds, samples_mapping: np.ndarray, first_sentence: int, end_sentence: int,
                 binary_head: bool = True, where: str | None = None) -> None:
        """
        Args:
            ds: the sentence-level MMapIndexedDataset.
            samples_mapping: int64 [n, 3] BertDataset.samples_mapping.
            first_sentence, end_sentence: the split's sentences ``first .. end-1``.
        """
        self.ds, self.tokens = ds, ds.tokens
        self.where = where or ds.path_prefix + ".bin"
        self.first, self.end = int(first_sentence), int(end_sentence)
        self.bounds = _sequence_bounds(ds)[self.first:self.end + 1]   # [sentences + 1]
        self.mapping = np.asarray(samples_mapping, dtype=np.int64)
        self.num_samples = len(self.mapping)
        self.specials = 3 if binary_head else 2
        if self.num_samples and (self.mapping[:, 0].min() < self.first
                                 or self.mapping[:, 1].max() > self.end):
            raise ValueError(f"{self.where}: the BERT samples mapping refers to sentences "
                             f"outside the split {self.first}..{self.end - 1}")
        sizes = np.diff(self.bounds)
        empty = np.flatnonzero(sizes == 0)
        if len(empty):
            raise ValueError(f"{self.where}: sentence {self.first + int(empty[0])} is empty; BERT "
                             "sample lengths need non-empty sentences (re-run preprocess_data.py)")

    def group_sums(self, sentence_sums: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Sum of ``sentence_sums`` (int64 [sentences of the split]) over the sentence group of
        each sample lo..hi-1, int64 [hi - lo]."""
        prefix = np.zeros(len(sentence_sums) + 1, dtype=np.int64)
        np.cumsum(sentence_sums, out=prefix[1:])
        rows = self.mapping[lo:hi]
        return prefix[rows[:, 1] - self.first] - prefix[rows[:, 0] - self.first]

    def seqlen_and_kept(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(seqlen, kept sentence tokens, group sentence tokens) of samples lo..hi-1, int64."""
        group = self.group_sums(np.diff(self.bounds), lo, hi)
        kept = np.minimum(group, self.mapping[lo:hi, 2])
        return kept + self.specials, kept, group
