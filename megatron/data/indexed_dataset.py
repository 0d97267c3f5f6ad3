"""Megatron's memory-mapped token store: a ``.bin`` file of raw token ids plus an ``.idx`` index.

The byte layout is that of Megatron-LM's ``MMapIndexedDataset`` so files written here can be
read by Megatron-LM / Megatron-DeepSpeed and the other way round.

``prefix.idx`` (all integers little-endian)::

    magic      9 bytes   b"MMIDIDX\\x00\\x00"
    version    uint64    1
    dtype      uint8     code of the token dtype (see DTYPE_CODES)
    N          uint64    number of sequences
    D1         uint64    number of doc_idx entries (documents + 1)
    sizes      int32[N]  tokens per sequence
    pointers   int64[N]  byte offset of each sequence in prefix.bin
    doc_idx    int64[D1] doc_idx[k] = first sequence of document k; doc_idx[0] == 0

``prefix.bin`` is the concatenation of all sequences in the token dtype.
"""

from __future__ import annotations

import os
import shutil
import struct
from typing import Iterable, Sequence

import numpy as np

from megatron.errors import BadInputError, MissingInputError

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D+1

DTYPE_CODES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32,
    5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
_CODE_OF = {np.dtype(t): code for code, t in DTYPE_CODES.items()}

# Sequences per chunk when validating pointers, so opening a huge index needs bounded memory.
_CHECK_CHUNK = 1 << 22


def data_file_path(prefix: str) -> str:
    """Path of the token file for ``prefix``."""
    return prefix + ".bin"


def index_file_path(prefix: str) -> str:
    """Path of the index file for ``prefix``."""
    return prefix + ".idx"


def best_fitting_dtype(vocab_size: int | None = None) -> np.dtype:
    """Smallest dtype Megatron uses for token ids: uint16 below 65500 tokens, else int32."""
    if vocab_size is not None and vocab_size < 65500:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def dtype_code(dtype) -> int:
    """The ``.idx`` code of a numpy dtype; ValueError if Megatron's format has none."""
    try:
        return _CODE_OF[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ValueError(f"dtype {dtype!r} cannot be stored in an indexed dataset; "
                         f"use one of {sorted(str(np.dtype(t)) for t in DTYPE_CODES.values())}")


def read_index_header(prefix: str) -> tuple[np.dtype, int, int]:
    """``(token dtype, sequences, documents)`` from ``prefix.idx``'s header alone."""
    path = index_file_path(prefix)
    if not os.path.isfile(path):
        raise MissingInputError(f"indexed dataset file not found: {path}")
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
    if len(header) < _HEADER.size or header[:len(_MAGIC)] != _MAGIC:
        raise BadInputError(f"{path}: not a Megatron mmap index (bad or short header)")
    _, _, code, n, d1 = _HEADER.unpack(header)
    if code not in DTYPE_CODES:
        raise BadInputError(f"{path}: unknown dtype code {code}; known codes {sorted(DTYPE_CODES)}")
    return np.dtype(DTYPE_CODES[code]), int(n), int(d1) - 1


class MMapIndexedDataset:
    """Read-only, memory-mapped view of ``prefix.bin`` / ``prefix.idx``.

    Attributes:
        sizes: int32 [N] tokens per sequence.
        pointers: int64 [N] byte offsets of the sequences in the ``.bin`` file.
        doc_idx: int64 [D+1] first sequence of each document.
        dtype: numpy dtype of the tokens.
        tokens: the whole ``.bin`` as one 1-D read-only array of ``dtype``.
    """

    dtype_codes: dict[int, type] = DTYPE_CODES   # DeepSpeed's analyzer files use another table

    def __init__(self, path_prefix: str) -> None:
        self.path_prefix = path_prefix
        self._open(path_prefix)

    # -- opening and validation ------------------------------------------------------------
    def _open(self, prefix: str) -> None:
        idx_path, bin_path = index_file_path(prefix), data_file_path(prefix)
        for path in (idx_path, bin_path):
            if not os.path.isfile(path):
                raise MissingInputError(f"indexed dataset file not found: {path}")
        idx_bytes = os.path.getsize(idx_path)
        if idx_bytes < _HEADER.size:
            raise BadInputError(f"{idx_path}: truncated index, {idx_bytes} bytes is shorter than "
                                f"the {_HEADER.size}-byte header")
        with open(idx_path, "rb") as f:
            magic, version, code, n, d1 = _HEADER.unpack(f.read(_HEADER.size))
        if magic != _MAGIC:
            raise BadInputError(f"{idx_path}: bad magic {magic!r}, expected {_MAGIC!r} "
                                "(not a Megatron mmap index)")
        if version != _VERSION:
            raise BadInputError(f"{idx_path}: unsupported index version {version}, expected {_VERSION}")
        if code not in self.dtype_codes:
            raise BadInputError(f"{idx_path}: unknown dtype code {code}; known codes {sorted(self.dtype_codes)}")
        expected = _HEADER.size + 4 * n + 8 * n + 8 * d1
        if idx_bytes != expected:
            raise BadInputError(f"{idx_path}: index is {idx_bytes} bytes but its header "
                                f"(N={n} sequences, {d1} doc_idx entries) needs {expected} bytes"
                                + (" (truncated)" if idx_bytes < expected else ""))
        self.dtype = np.dtype(self.dtype_codes[code])
        self._idx_mmap = np.memmap(idx_path, mode="r", dtype=np.uint8)
        buf = memoryview(self._idx_mmap)
        off = _HEADER.size
        self.sizes = np.frombuffer(buf, dtype=np.int32, count=n, offset=off)
        self.pointers = np.frombuffer(buf, dtype=np.int64, count=n, offset=off + 4 * n)
        self.doc_idx = np.frombuffer(buf, dtype=np.int64, count=d1, offset=off + 12 * n)
        bin_bytes = os.path.getsize(bin_path)
        self._validate(idx_path, bin_path, bin_bytes)
        if bin_bytes == 0:  # mmap refuses empty files
            self.tokens = np.zeros(0, dtype=self.dtype)
            self.tokens.flags.writeable = False
        else:
            self.tokens = np.memmap(bin_path, mode="r", dtype=self.dtype)

    def _validate(self, idx_path: str, bin_path: str, bin_bytes: int) -> None:
        """Check the index against itself and against the length of the ``.bin`` file."""
        item = self.dtype.itemsize
        n = len(self.sizes)
        if bin_bytes % item:
            raise BadInputError(f"{bin_path}: {bin_bytes} bytes is not a multiple of the "
                                f"{self.dtype} item size {item} (truncated?)")
        if len(self.doc_idx) == 0 or self.doc_idx[0] != 0:
            raise BadInputError(f"{idx_path}: doc_idx must start with 0")
        if n and (self.doc_idx[-1] > n or np.any(np.diff(self.doc_idx) < 0)):
            raise BadInputError(f"{idx_path}: doc_idx is not a non-decreasing list of sequence "
                                f"indices within 0..{n}")
        expected_end = 0
        for lo in range(0, n, _CHECK_CHUNK):
            sizes = self.sizes[lo:lo + _CHECK_CHUNK].astype(np.int64)
            ptrs = self.pointers[lo:lo + _CHECK_CHUNK]
            if np.any(sizes < 0):
                raise BadInputError(f"{idx_path}: negative sequence size near sequence {lo}")
            starts = expected_end + np.concatenate(([0], np.cumsum(sizes[:-1] * item)))
            bad = np.nonzero(ptrs != starts)[0]
            if len(bad):
                i = lo + int(bad[0])
                raise BadInputError(f"{idx_path}: pointer of sequence {i} is {int(self.pointers[i])}, "
                                    f"expected {int(starts[bad[0]])} from the sizes")
            expected_end = int(starts[-1] + sizes[-1] * item)
        if expected_end != bin_bytes:
            raise BadInputError(f"{bin_path}: data file has {bin_bytes} bytes but the index "
                                f"{idx_path} describes {expected_end} bytes "
                                f"({expected_end // item} tokens of {self.dtype}); size mismatch")

    # -- pickling: reopen instead of copying the mapped arrays ------------------------------
    def __getstate__(self) -> dict:
        return {"path_prefix": self.path_prefix}

    def __setstate__(self, state: dict) -> None:
        self.path_prefix = state["path_prefix"]
        self._open(self.path_prefix)

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sizes)

    def _span(self, i: int) -> tuple[int, int]:
        """Token start and size of sequence ``i`` (negative indices allowed)."""
        n = len(self.sizes)
        if not -n <= i < n:
            raise IndexError(f"sequence index {i} out of range for {n} sequences in {self.path_prefix}")
        i %= n
        return int(self.pointers[i]) // self.dtype.itemsize, int(self.sizes[i])

    def __getitem__(self, idx):
        """Tokens of sequence ``idx`` (1-D array), or a list of arrays for a step-1 slice."""
        if isinstance(idx, (int, np.integer)):
            start, size = self._span(int(idx))
            return np.asarray(self.tokens[start:start + size])
        if isinstance(idx, slice):
            lo, hi, step = idx.indices(len(self))
            if step != 1:
                raise ValueError("slices of an indexed dataset must be contiguous (step 1)")
            if hi <= lo:
                return []
            start = int(self.pointers[lo]) // self.dtype.itemsize
            sizes = self.sizes[lo:hi].astype(np.int64)
            flat = np.asarray(self.tokens[start:start + int(sizes.sum())])
            return np.split(flat, np.cumsum(sizes)[:-1])
        raise TypeError(f"indexed dataset indices must be int or slice, not {type(idx).__name__}")

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``offset .. offset+length-1`` of sequence ``i`` (to its end if length is None)."""
        start, size = self._span(int(i))
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"get({i}, offset={offset}, length={length}) is outside sequence "
                             f"{i} of {size} tokens in {self.path_prefix}")
        return np.asarray(self.tokens[start + offset:start + offset + length])

    @property
    def num_documents(self) -> int:
        return len(self.doc_idx) - 1

    @staticmethod
    def exists(path_prefix: str) -> bool:
        return os.path.isfile(index_file_path(path_prefix)) and os.path.isfile(data_file_path(path_prefix))


def write_index(idx_path: str, dtype, sizes: Sequence[int], doc_idx: Sequence[int],
                code: int | None = None) -> None:
    """Write a ``.idx`` file (directly to ``idx_path``); pointers are derived from ``sizes``.

    ``code`` overrides the header's dtype code (DeepSpeed's table differs from Megatron's).
    """
    dtype = np.dtype(dtype)
    sizes64 = np.asarray(sizes, dtype=np.int64)
    if len(sizes64) and (sizes64.min() < 0 or sizes64.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{idx_path}: sequence sizes must fit in int32")
    pointers = np.zeros(len(sizes64), dtype=np.int64)
    np.cumsum(sizes64[:-1] * dtype.itemsize, out=pointers[1:])
    doc = np.asarray(doc_idx, dtype=np.int64)
    with open(idx_path, "wb") as f:
        f.write(_HEADER.pack(_MAGIC, _VERSION, dtype_code(dtype) if code is None else code,
                             len(sizes64), len(doc)))
        f.write(sizes64.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(doc.astype("<i8").tobytes())


class MMapIndexedDatasetBuilder:
    """Streams sequences into ``bin_path``; ``finalize`` writes the index and publishes both.

    Until ``finalize`` the data go to a temporary name beside ``bin_path``, so a crashed run never
    leaves a ``.bin``/``.idx`` pair that a later step would trust.
    """

    def __init__(self, bin_path: str, dtype=np.int32) -> None:
        self.dtype = np.dtype(dtype)
        dtype_code(self.dtype)  # reject dtypes the format cannot store, early
        self._bin_path = bin_path
        self._tmp_bin = f"{bin_path}.tmp{os.getpid()}"
        self._file = open(self._tmp_bin, "wb")
        self._sizes: list[int] = []
        self._doc_idx: list[int] = [0]

    def _as_array(self, tokens) -> np.ndarray:
        if hasattr(tokens, "detach"):  # torch tensor
            tokens = tokens.detach().cpu().numpy()
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        if arr.size and arr.dtype.kind in "iu" and self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise ValueError(f"{self._bin_path}: token ids {int(arr.min())}..{int(arr.max())} "
                                 f"do not fit in {self.dtype}")
        return arr.astype(self.dtype, copy=False)

    def add_item(self, tokens) -> None:
        """Append one sequence (list, numpy array or tensor of token ids)."""
        arr = self._as_array(tokens)
        self._file.write(arr.tobytes(order="C"))
        self._sizes.append(len(arr))

    def end_document(self) -> None:
        """Mark the sequences added since the last call as one document."""
        self._doc_idx.append(len(self._sizes))

    def add_document(self, tokens, lengths: Iterable[int]) -> None:
        """Append one document made of consecutive sequences of the given ``lengths``."""
        arr = self._as_array(tokens)
        lengths = [int(x) for x in lengths]
        if sum(lengths) != len(arr):
            raise ValueError(f"add_document: lengths sum to {sum(lengths)} but {len(arr)} tokens given")
        self._file.write(arr.tobytes(order="C"))
        self._sizes.extend(lengths)
        self.end_document()

    def merge_file_(self, another_prefix: str) -> None:
        """Append every sequence and document of the dataset at ``another_prefix``."""
        other = MMapIndexedDataset(another_prefix)
        if other.dtype != self.dtype:
            raise ValueError(f"cannot merge {another_prefix}: dtype {other.dtype} != {self.dtype}")
        offset = len(self._sizes)
        self._sizes.extend(other.sizes.tolist())
        self._doc_idx.extend((offset + other.doc_idx[1:]).tolist())
        del other
        with open(data_file_path(another_prefix), "rb") as f:
            shutil.copyfileobj(f, self._file, 1 << 24)

    def finalize(self, idx_path: str) -> None:
        """Close the data, write the index and rename both to their final names."""
        if self._doc_idx[-1] != len(self._sizes):
            self.end_document()  # trailing sequences form a last document
        self._file.close()
        tmp_idx = f"{idx_path}.tmp{os.getpid()}"
        try:
            write_index(tmp_idx, self.dtype, self._sizes, self._doc_idx)
            os.replace(self._tmp_bin, self._bin_path)
            os.replace(tmp_idx, idx_path)
        except BaseException:
            for p in (tmp_idx, self._tmp_bin):
                if os.path.exists(p):
                    os.remove(p)
            raise

    def abort(self) -> None:
        """Drop everything written so far (no output files are created)."""
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self._tmp_bin):
            os.remove(self._tmp_bin)


def make_builder(bin_path: str, vocab_size: int | None = None) -> MMapIndexedDatasetBuilder:
    """Builder with Megatron's best-fitting token dtype for ``vocab_size``."""
    return MMapIndexedDatasetBuilder(bin_path, dtype=best_fitting_dtype(vocab_size))
