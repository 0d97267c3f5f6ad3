"""A token store's record of how it was made: ``PREFIX.tokenizer.json`` beside the
byte-compatible ``PREFIX.bin`` / ``PREFIX.idx`` (Megatron's readers open only those two).

``tools/preprocess_data.py`` writes it (``tools/prune_data.py`` copies it to a pruned
store)::

    {"format": "megatron-de store record 1",
     "tokenizer": {...megatron.tokenizer.identity...},
     "max_token_id": 50256,          # no id in the store is larger
     "bin_bytes": 123456, "idx_bytes": 7890, "sequences": 10, "documents": 10}

Whoever reads the store with a tokenizer (training, the analyzer, evaluation) calls
:func:`check_store`: a store made with another tokenizer is refused naming both, a store
whose ids exceed the vocabulary is refused before step 1, and a store without a record
(made by Megatron, or by hand) is accepted with one warning per store. The sizes tie the
record to its files: a store rewritten by another tool under the same prefix leaves a
record that no longer describes it, which is reported and ignored.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from megatron.data.indexed_dataset import MMapIndexedDataset, read_index_header
from megatron.errors import BadInputError, MissingInputError
from megatron.tokenizer.identity import describe, identity_differences

FORMAT = "megatron-de store record 1"
# A store without a record is scanned for its largest id only up to this size.
SCAN_LIMIT_BYTES = 256 << 20
_warned: set[str] = set()


def record_path(prefix: str) -> str:
    return prefix + ".tokenizer.json"


def _file_sizes(prefix: str) -> dict:
    return {"bin_bytes": os.path.getsize(prefix + ".bin"),
            "idx_bytes": os.path.getsize(prefix + ".idx")}


def store_summary(prefix: str) -> dict:
    """The sizes that identify a store cheaply (file sizes, sequence and document counts
    from the ``.idx`` header), recorded with checkpoints."""
    _, sequences, documents = read_index_header(prefix)
    return {**_file_sizes(prefix), "sequences": sequences, "documents": documents}


def write_record(prefix: str, tokenizer: dict, max_token_id: int, sequences: int,
                 documents: int) -> None:
    """Write ``PREFIX.tokenizer.json`` for the finished ``PREFIX.bin/.idx`` (a temporary
    name, then renamed)."""
    record = {"format": FORMAT, "tokenizer": tokenizer, "max_token_id": int(max_token_id),
              **_file_sizes(prefix), "sequences": int(sequences), "documents": int(documents)}
    tmp = f"{record_path(prefix)}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, record_path(prefix))


def remove_record(prefix: str) -> None:
    """Drop a record before its store is rewritten (a crash must not leave it behind)."""
    if os.path.exists(record_path(prefix)):
        os.remove(record_path(prefix))


def read_record(prefix: str) -> dict | None:
    """The store's record, or None when it has none or the record describes other files
    (warned once). A damaged record is a ``BadInputError``."""
    path = record_path(prefix)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        sizes = {k: int(record[k]) for k in ("bin_bytes", "idx_bytes")}
        record["tokenizer"]["type"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadInputError(f"{path}: not a readable store record ({err}); remove it or "
                            "rebuild the store with tools/preprocess_data.py") from None
    if os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx") \
            and sizes != _file_sizes(prefix):
        _warn_once(prefix, f"{path} describes other files than {prefix}.bin/.idx (sizes "
                   f"{sizes}, now {_file_sizes(prefix)}): the store was rewritten by another "
                   "tool; its tokenizer is not checked (remove the stale record)")
        return None
    return record


def _warn_once(prefix: str, message: str) -> None:
    if prefix not in _warned:
        _warned.add(prefix)
        print(f" > WARNING: {message}", file=sys.stderr, flush=True)


def largest_token_id(prefix: str, limit_bytes: int = SCAN_LIMIT_BYTES) -> int | None:
    """The largest id in ``PREFIX.bin`` by a chunked scan, or None when the file is larger
    than ``limit_bytes`` (then too slow to read at every start) or holds no token."""
    if os.path.getsize(prefix + ".bin") > limit_bytes:
        return None
    tokens = MMapIndexedDataset(prefix).tokens
    chunk = 1 << 24
    found = [int(tokens[i:i + chunk].max()) for i in range(0, len(tokens), chunk)]
    return max(found) if found else None


def warn_if_unrecorded(prefix: str) -> None:
    """For readers without a tokenizer to compare: one warning when ``prefix`` has no
    record (its ids cannot be tied to any tokenizer)."""
    if read_record(prefix) is None:
        _warn_once(prefix, f"{prefix}: no tokenizer record "
                   f"({os.path.basename(record_path(prefix))}, written by "
                   "tools/preprocess_data.py); which tokenizer made it is not known")


def check_store(prefix: str, tokenizer: dict) -> None:
    """Refuse ``prefix`` when its record names another tokenizer than ``tokenizer`` (an
    identity dict) or ids at or past its vocabulary; warn once when it has no record.

    Raises:
        BadInputError: naming the store, both tokenizers and every difference.
    """
    for path in (prefix + ".idx", prefix + ".bin"):
        if not os.path.isfile(path):
            raise MissingInputError(f"indexed dataset file not found: {path}")
        if not os.access(path, os.R_OK):
            raise BadInputError(f"{path}: not readable (permission denied)")
    record = read_record(prefix)
    vocab = int(tokenizer["vocab_size"])
    if record is not None:
        differences = identity_differences(record["tokenizer"], tokenizer)
        if differences:
            raise BadInputError(
                f"{prefix}: the token store was made with tokenizer "
                f"{describe(record['tokenizer'])}, this run uses {describe(tokenizer)} ("
                + "; ".join(differences) + "); tokenize the data again with this tokenizer "
                "(tools/preprocess_data.py) or give the store's tokenizer flags")
        largest = record.get("max_token_id")
    else:
        dtype_bound = _dtype_bound(prefix)
        largest = None if dtype_bound < vocab else largest_token_id(prefix)
        note = ("its ids are within the vocabulary by their dtype" if dtype_bound < vocab else
                "its ids were scanned" if largest is not None else
                "too large to scan for out-of-range ids at start")
        _warn_once(prefix, f"{prefix}: no tokenizer record ({os.path.basename(record_path(prefix))}"
                   f", written by tools/preprocess_data.py); assuming it was made with "
                   f"{describe(tokenizer)} ({note})")
    if largest is not None and int(largest) >= vocab:
        raise BadInputError(f"{prefix}: the store holds token id {int(largest)}, outside the "
                            f"vocabulary of {describe(tokenizer)} (ids 0..{vocab - 1}); it "
                            "was made with another tokenizer")


def _dtype_bound(prefix: str) -> int:
    """The largest id the store's dtype can hold (from the ``.idx`` header)."""
    dtype = read_index_header(prefix)[0]
    return int(np.iinfo(dtype).max) if dtype.kind in "iu" else sys.maxsize
