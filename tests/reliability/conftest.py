"""The reliability tests' shared corpus: a jsonl, two tiny GPT-2 BPE tokenizers (A and B,
different merges), and A's token store made by tools/preprocess_data.py (so it carries its
tokenizer record). Built once per session."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.reliability.helpers import WORDS, Corpus, gpt2_files, tool


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    root = str(tmp_path_factory.mktemp("reliability"))
    rng = np.random.default_rng(0)
    jsonl = os.path.join(root, "docs.jsonl")
    with open(jsonl, "w") as f:
        for _ in range(150):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS, int(rng.integers(8, 40))))})
                    + "\n")
    merges = [("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("a", "t"), ("Ġ", "s"), ("Ġ", "r")]
    tok_a = gpt2_files(os.path.join(root, "tok_a"), merges)
    tok_b = gpt2_files(os.path.join(root, "tok_b"), merges[:4])
    prefix = os.path.join(root, "a")
    assert tool("preprocess_data").main(["--input", jsonl, "--output-prefix", prefix,
                                              "--append-eod", *tok_a]) == 0
    return Corpus(root, jsonl, prefix + "_text_document", tok_a, tok_b)
