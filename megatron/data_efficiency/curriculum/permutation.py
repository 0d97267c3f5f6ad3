"""Seeded bijective permutations in O(1) memory, vectorised over NumPy.

A curriculum cluster is a contiguous range of the analyzer's sorted order, so "a shuffled
permutation of the cluster, reshuffled when used up" needs no stored permutation: the
cluster walks a keyed bijection of ``[0, D)`` (``D`` the smallest power of two >= 4 and
>= its size) and skips outputs at or above its size. Every value below the size appears
exactly once per walk of ``[0, D)``, so the accepted outputs form a permutation of the
cluster; a new key per epoch gives the reshuffle. ``D < 2 * size``, so at most half the
walk is skipped.

The bijection is an unbalanced Feistel network (halves of ``bits // 2`` and
``bits - bits // 2`` bits, an even number of rounds) whose round function is a keyed
64-bit multiply-shift hash. Arithmetic is uint64 with wrap-around, so every platform and
rank computes the same values.
"""
from __future__ import annotations

import numpy as np

ROUNDS = 4
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_MUL = np.uint64(0xD6E8FEB86659FD93)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S = {k: np.uint64(k) for k in (11, 27, 30, 31)}
_WEYL: dict[int, np.ndarray] = {}      # counter offsets per batch size, built once


def splitmix64(x: int) -> int:
    """One step of SplitMix64 on a Python int (scalar key derivation)."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_key(*parts: int) -> int:
    """Hash a tuple of ints into one 64-bit key."""
    key = 0x2545F4914F6CDD1D
    for part in parts:
        key = splitmix64(key ^ (int(part) & _MASK64))
    return key


def round_keys(*parts: int) -> np.ndarray:
    """``ROUNDS`` uint64 round keys of the permutation identified by ``parts``."""
    base = derive_key(*parts)
    return np.array([derive_key(base, r) for r in range(ROUNDS)], dtype=np.uint64)


def domain_bits(n: int) -> int:
    """Bits of the Feistel domain for a range of ``n >= 1`` values (at least 2)."""
    return max(2, int(n - 1).bit_length())


def feistel(x: np.ndarray, bits: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Keyed bijection of ``[0, 2**bits)``, per element.

    Args:
        x: uint64 inputs, ``x < 2**bits``.                                    # [k]
        bits: uint64 domain bits per element (>= 2).                           # [k]
        keys: uint64 round keys, one row per round.                            # [ROUNDS, k]

    Returns:
        uint64 outputs in ``[0, 2**bits)``.                                    # [k]
    """
    one = np.uint64(1)
    wl = bits >> one                    # bits of the left half
    wr = bits - wl                      # bits of the right half (>= wl)
    sh_l = np.uint64(64) - wl           # shift that leaves wl high bits of a product
    sh_r = np.uint64(64) - wr
    left = x >> wr
    right = x & ((one << wr) - one)
    for r in range(ROUNDS):
        # Round r maps the right half into the width of the left one; widths swap.
        shift = sh_l if r % 2 == 0 else sh_r
        f = ((right ^ keys[r]) * _MUL) >> shift
        left, right = right, left ^ f
    return (left << wr) | right         # after an even number of rounds widths are back


def permute_range(x: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """Random-access form: the keyed permutation of ``[0, n)`` at positions ``x``.

    Position ``p`` is the ``p``-th accepted output of the walk ``feistel(0..D-1)``; this
    computes it by walking, so it is meant for tests and small ``n`` only.
    """
    walk = feistel(np.arange(1 << domain_bits(n), dtype=np.uint64),
                   np.full(1 << domain_bits(n), domain_bits(n), dtype=np.uint64),
                   keys[:, None])
    return walk[walk < np.uint64(n)].astype(np.int64)[np.asarray(x)]


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array."""
    z = (z ^ (z >> _S[30])) * _M1
    z = (z ^ (z >> _S[27])) * _M2
    return z ^ (z >> _S[31])


def uniform_ints(key: int, count: int, high: int) -> np.ndarray:
    """``count`` independent uniform int64 in ``[0, high)`` from a 64-bit ``key``."""
    steps = _WEYL.get(count)
    if steps is None:
        steps = _WEYL[count] = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
    ctr = steps + np.uint64(key)
    u = mix64(ctr) >> _S[11]                                 # 53 uniform bits
    r = (u.astype(np.float64) * (high / 9007199254740992.0)).astype(np.int64)
    return np.minimum(r, high - 1)
