"""Vectorised, bounded-memory compute over a flat token array (the ``.bin`` memmap).

The tokens are read in chunks of ``chunk`` tokens (a few hundred KiB, so the temporaries stay
in cache); there is no Python loop per sample or per document. Additive metrics (seqlen,
vocabulary rarity) are per-token contributions looked up in an int64 table and summed;
the sums are exact integers, so any split of the data into chunks, shards or ranks gives
bit-identical results.
"""

from __future__ import annotations

import math

import numpy as np

CHUNK_TOKENS = 1 << 18
# Fixed-point scale of the per-token rarity -ln p(token): sums of int64 are exact and
# order-independent; 2^-24 resolution per token is far below anything a curriculum sees.
VOC_FRACTION_BITS = 24


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique's hash path is several times slower on int64)."""
    a = np.sort(a, kind="stable")
    if len(a) < 2:
        return a
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def token_counts(tokens: np.ndarray, start: int, end: int, where: str,
                 chunk: int = CHUNK_TOKENS) -> np.ndarray:
    """Histogram of token ids in ``tokens[start:end]``.

    Returns:
        int64 [max id + 1] (empty if the range is empty).
    """
    total = np.zeros(0, dtype=np.int64)
    buf = np.empty(min(chunk, max(end - start, 0)), dtype=np.intp)
    for a in range(start, end, chunk):
        c = tokens[a:min(a + chunk, end)]
        b = buf[:len(c)]
        b[...] = c
        try:
            cnt = np.bincount(b, minlength=len(total))
        except ValueError:
            raise ValueError(f"{where}: negative token id {int(b.min())} near token {a}")
        if len(cnt) > len(total):
            total = np.concatenate((total, np.zeros(len(cnt) - len(total), np.int64)))
        total += cnt
    return total


def prefix_sums_at(tokens: np.ndarray, start: int, end: int, positions: np.ndarray,
                   lut: np.ndarray, where: str, chunk: int = CHUNK_TOKENS) -> np.ndarray:
    """T(x) = sum(lut[tokens[start:x]]) for every x in ``positions``.

    Args:
        tokens: 1-D token array (memmap).
        positions: int64 [Q] sorted, each within [start, end].
        lut: int64 [vocab] per-token contribution.
        where: file name for error messages.

    Returns:
        int64 [Q].
    """
    cuts = sorted_unique(np.concatenate((np.asarray(positions, np.int64), [start, end],
                                         np.arange(start, end, chunk, dtype=np.int64))))
    piece = np.zeros(len(cuts), dtype=np.int64)  # piece[k]: sum over cuts[k] .. cuts[k+1]
    n = min(chunk, max(end - start, 0))
    # uint8/uint16 ids always fit a table of 2^bits entries; otherwise check each chunk.
    check = not (tokens.dtype.kind == "u" and len(lut) >= 1 << (8 * tokens.dtype.itemsize))
    buf, vals = np.empty(n, dtype=np.intp), np.empty(n, dtype=np.int64)
    for a in range(start, end, chunk):
        b = min(a + chunk, end)
        k0, k1 = np.searchsorted(cuts, [a, b])  # cuts[k0] == a: chunk starts are cuts
        c = tokens[a:b]
        ib, vb = buf[:len(c)], vals[:len(c)]
        ib[...] = c
        if check and (ib.max() >= len(lut) or ib.min() < 0):
            bad = int(ib.max()) if ib.max() >= len(lut) else int(ib.min())
            raise ValueError(f"{where}: token id {bad} near token {a} is outside the "
                             f"vocabulary of {len(lut)} (pass --vocab-size?)")
        np.take(lut, ib, out=vb, mode="clip")  # ids checked above; "clip" skips a slower check
        piece[k0:k1] = np.add.reduceat(vb, cuts[k0:k1] - a)
    prefix = np.zeros(len(cuts), dtype=np.int64)
    np.cumsum(piece[:-1], out=prefix[1:])
    return prefix[np.searchsorted(cuts, positions)]


def voc_lut(counts: np.ndarray) -> np.ndarray:
    """Fixed-point rarity table: round(-ln(count / total) * 2^VOC_FRACTION_BITS), 0 for unseen ids.

    Returns:
        int64 [vocab].
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    lut = np.zeros(len(counts), dtype=np.int64)
    seen = counts > 0
    if total:
        rarity = math.log(total) - np.log(counts[seen].astype(np.float64))
        lut[seen] = np.rint(rarity * float(1 << VOC_FRACTION_BITS)).astype(np.int64)
    return lut


def voc_from_fixed(acc: np.ndarray) -> np.ndarray:
    """Fixed-point rarity sums -> float64 nats."""
    return np.asarray(acc, dtype=np.int64) / float(1 << VOC_FRACTION_BITS)


def seqlen_voc_composite(seqlen: np.ndarray, voc_acc: np.ndarray, max_seqlen: int,
                         max_voc_acc: int) -> tuple[np.ndarray, int, int]:
    """One int64 key ordering by seqlen, then rarity: ``(seqlen << bits) + (voc_acc >> shift)``.

    ``bits`` holds the largest rarity sum; ``shift`` drops low rarity bits only when seqlen and
    rarity together would not fit in 63 bits. The maxima are global, so every rank agrees.

    Returns:
        (int64 keys, bits, shift).
    """
    voc_bits = int(max_voc_acc).bit_length()
    shift = max(0, voc_bits + int(max_seqlen).bit_length() - 63)
    bits = voc_bits - shift
    keys = (np.asarray(seqlen, np.int64) << bits) + (np.asarray(voc_acc, np.int64) >> shift)
    return keys, bits, shift


def gather_spans(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``tokens[starts[k]:starts[k]+lengths[k]]`` for all k, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    out_starts = np.cumsum(lengths) - lengths
    idx = np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, np.int64) - out_starts, lengths)
    return np.asarray(tokens[idx]) if total else np.zeros(0, dtype=tokens.dtype)
