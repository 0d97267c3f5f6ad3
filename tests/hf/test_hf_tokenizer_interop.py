"""A Hugging Face tokenizer (HuggingFaceTokenizer) in the ecosystem paths: `--saver hf`
copies its files into the exported model folder, `--loader hf` points the checkpoint at
that folder (and prints the flags), and the lm-eval adapter encodes with its BOS, ends at
its EOS and decodes with it."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from megatron.tokenizer import build_tokenizer
from megatron.tokenizer.identity import tokenizer_identity
from tests.hf.helpers import checkpoint_util, save_tiny
from tests.hf.hf_tokenizer import EXTRA_TEXTS, documents, make_hf_tokenizer

transformers = pytest.importorskip("transformers")
HF, SEQ, VOCAB = "HuggingFaceTokenizer", 16, 300


def _tiny_with(tokenizer_model: str, folder: str, kind: str = "gpt_learned"):
    return save_tiny(kind, folder, seq_length=SEQ, max_position_embeddings=SEQ,
                     tokenizer_type=HF, tokenizer_model=tokenizer_model, vocab_size=None,
                     orig_vocab_size=VOCAB, padded_vocab_size=304)


@pytest.mark.parametrize("bare", [False, True], ids=["folder", "bare_tokenizer_json"])
def test_tokenizer_files_travel_both_ways(tmp_path, capsys, bare):
    docs = documents(40)
    folder = make_hf_tokenizer(str(tmp_path / "tok"), docs)
    model_path = os.path.join(folder, "tokenizer.json") if bare else folder
    ours = build_tokenizer(HF, tokenizer_model=model_path)
    _tiny_with(model_path, str(tmp_path / "ours"))
    tool, hf = checkpoint_util(), tmp_path / "hf"
    tool.main(["--saver", "hf", "--load-dir", str(tmp_path / "ours"), "--save-dir", str(hf)])
    copied = ["tokenizer.json"] if bare else ["tokenizer.json", "tokenizer_config.json"]
    for name in copied:                                   # as they are, byte for byte
        assert (hf / name).read_bytes() == open(os.path.join(folder, name), "rb").read()
    if bare:                                              # a config naming its specials
        written = json.load(open(hf / "tokenizer_config.json"))
        assert (written["bos_token"], written["eos_token"]) == ("<s>", "</s>")
    theirs = transformers.AutoTokenizer.from_pretrained(str(hf), local_files_only=True)
    assert (theirs.bos_token_id, theirs.eos_token_id) == (1, 2)
    for text in docs[:4] + list(EXTRA_TEXTS):
        assert theirs(text).input_ids == ours.tokenize(text), text
    config = json.load(open(hf / "config.json"))
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)     # <s>, </s>
    capsys.readouterr()
    tool.main(["--loader", "hf", "--load-dir", str(hf), "--save-dir", str(tmp_path / "back")])
    assert f"--tokenizer-type {HF} --tokenizer-model {hf}" in capsys.readouterr().out
    config = tool.load_whole(str(tmp_path / "back"))[2]
    assert (config.tokenizer.tokenizer_type, config.tokenizer.tokenizer_model) == (HF, str(hf))
    if not bare:   # the exported folder is the run's tokenizer: its token stores still fit
        again = build_tokenizer(HF, tokenizer_model=str(hf))
        assert tokenizer_identity(HF, again, tokenizer_model=str(hf)) == \
            tokenizer_identity(HF, ours, tokenizer_model=folder)


def test_llama_export_names_the_tokenizers_bos_and_eos(tmp_path):
    """A Llama trained with a Hugging Face tokenizer: config.json carries the tokenizer's
    BOS and EOS (not the end of document twice), so transformers' generation starts and
    stops where the tokenizer does; a tokenizer with a PAD names it too."""
    docs = documents(40)
    folder = make_hf_tokenizer(str(tmp_path / "tok"), docs)
    _tiny_with(folder, str(tmp_path / "ours"), kind="llama")
    checkpoint_util().main(["--saver", "hf", "--load-dir", str(tmp_path / "ours"),
                            "--save-dir", str(tmp_path / "hf")])
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert config.get("pad_token_id") is None
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == \
        (theirs.bos_token_id, theirs.eos_token_id)
    padded = transformers.AutoTokenizer.from_pretrained(folder)    # the same, PAD = <unk>
    padded.pad_token = "<unk>"
    padded.save_pretrained(str(tmp_path / "tok_pad"))
    _tiny_with(str(tmp_path / "tok_pad"), str(tmp_path / "ours_pad"), kind="llama")
    checkpoint_util().main(["--saver", "hf", "--load-dir", str(tmp_path / "ours_pad"),
                            "--save-dir", str(tmp_path / "hf_pad")])
    config = json.load(open(tmp_path / "hf_pad" / "config.json"))
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == \
        (1, 2, 0)


class _Scorer:
    """One sequence at a time through our model: no batching, no padding, no lm-eval."""

    def __init__(self, model) -> None:
        self.model = model

    def logp(self, ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(torch.tensor([ids]), torch.arange(len(ids))[None], None)
        return torch.log_softmax(out[0, :, :VOCAB], -1)          # [s, V]

    def score(self, context: list[int], continuation: list[int]) -> float:
        lp = self.logp(context + continuation[:-1])[len(context) - 1:]
        return lp.gather(-1, torch.tensor(continuation)[:, None]).sum().item()


def test_lm_eval_adapter_encodes_with_bos_and_decodes(tmp_path):
    from tasks.eval_lm import MegatronLM
    from tasks.eval_model import load_eval_model
    folder = make_hf_tokenizer(str(tmp_path / "tok"), documents(40))
    model, _ = _tiny_with(folder, str(tmp_path / "ckpt"))
    lm = MegatronLM(load_eval_model(str(tmp_path / "ckpt")), batch_size=2)
    tok, brute = lm.scorer.tokenizer, _Scorer(model)
    text = "the cat sat on a mat."
    assert lm.tok_encode(text) == [1] + lm.tok_encode(text, add_special_tokens=False)
    assert lm.tok_decode(lm.tok_encode(text, add_special_tokens=False)) == text
    assert (lm.prefix_token_id, lm.eot_token_id) == (1, 2)

    requests = [SimpleNamespace(args=("", "the dog ran")),
                SimpleNamespace(args=("the dog", " ran to the park"))]
    got = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    whole, context = tok.tokenize("the dog ran to the park"), tok.tokenize("the dog")
    assert got == pytest.approx([brute.score([1], tok.tokenize_text("the dog ran")),
                                 brute.score(context, whole[len(context):])], abs=1e-4)

    long_text = " ".join(documents(3, seed=4))              # several windows of SEQ tokens
    ids, expect = tok.tokenize_text(long_text), 0.0
    assert len(ids) > 2 * SEQ
    for start in range(0, len(ids), SEQ):                    # the first conditioned on BOS
        end = min(start + SEQ, len(ids))
        inp = ([1] + ids)[:end] if start == 0 else ids[end - SEQ - 1:end - 1]
        lp = brute.logp(inp)[-(end - start):]
        expect += lp.gather(-1, torch.tensor(ids[start:end])[:, None]).sum().item()
    rolled = lm.loglikelihood_rolling([SimpleNamespace(args=(long_text,))], disable_tqdm=True)
    assert rolled[0] == pytest.approx(expect, abs=1e-3)

    prompt, new = tok.tokenize("the cat"), []
    for _ in range(4):
        nxt = int(brute.logp(prompt + new)[-1].argmax())
        if nxt == 2:
            break
        new.append(nxt)
    generated = lm.generate_until([SimpleNamespace(
        args=("the cat", {"until": ["</s>"], "max_gen_toks": 4}))], disable_tqdm=True)
    assert generated == [tok.detokenize(new).split("</s>")[0]]


def test_import_takes_our_own_tokenizer_only_where_it_is_the_same(tmp_path):
    """GPT-2's BPE files are our GPT2BPETokenizer only under a GPT-2 tokenizer class (or
    none): another byte-level BPE with vocab.json + merges.txt (Qwen's) pre-tokenizes
    differently, and is imported as a HuggingFaceTokenizer of the folder."""
    from megatron.hf.hf_dir import hf_tokenizer_args
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    assert hf_tokenizer_args(str(tmp_path))["tokenizer_type"] == "GPT2BPETokenizer"
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "Qwen2Tokenizer"}')
    assert hf_tokenizer_args(str(tmp_path)) == {"tokenizer_type": HF,
                                                "tokenizer_model": str(tmp_path)}
