"""A Llama-style Hugging Face tokenizer trained here with the ``tokenizers`` library (never
downloaded): byte-level BPE, ``<unk>`` / ``<s>`` (BOS) / ``</s>`` (EOS) as ids 0 / 1 / 2,
BOS put before every text by the tokenizer's post-processor, saved as a folder with
``transformers.PreTrainedTokenizerFast(...).save_pretrained``."""
from __future__ import annotations

import json
import os

from tests.hf.helpers import corpus

SPECIALS = ("<unk>", "<s>", "</s>")
EXTRA_TEXTS = ("Héllo wörld, 漢字 and emoji ✓ in one line.",
               "def f(x):\n\treturn {'a': [1, 2]}  # two  spaces\n\n")


def documents(n: int = 120, seed: int = 0) -> list[str]:
    """``n`` documents of a few sentences (about 20 KB for 120), every 7th with unicode or code."""
    lines = corpus(3 * n, seed=seed)
    docs = [" ".join(lines[3 * i:3 * i + 3]) for i in range(n)]
    for i in range(1, n, 7):
        docs[i] += " " + EXTRA_TEXTS[i % len(EXTRA_TEXTS)]
    return docs


def write_jsonl(path: str, docs: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    return path


def make_hf_tokenizer(folder: str, docs: list[str], vocab_size: int = 300,
                      add_eos: bool = False) -> str:
    """Train the tokenizer on ``docs`` and save it as a folder (tokenizer.json +
    tokenizer_config.json); ``add_eos`` also ends every text with EOS. Returns the folder."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    single = "<s> $A </s>" if add_eos else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} $B:1", special_tokens=[("<s>", 1), ("</s>", 2)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                                bos_token="<s>", eos_token="</s>")
    os.makedirs(folder, exist_ok=True)
    fast.save_pretrained(folder)
    return folder
