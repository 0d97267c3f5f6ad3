"""examples/continue_pretraining_cl_ltd.sh as a user runs it (no python on PATH, the
training loader's default workers), on CPU: a tiny ``LlamaForCausalLM`` with a Llama-style
Hugging Face tokenizer, both made here, is imported, its corpus tokenized with its own
tokenizer, indexed by vocabulary rarity, trained on with CL_seqtru_voc + random-LTD from
the imported weights and exported back; transformers loads the export (tokenizer
included) and its logits are our final checkpoint's. A rerun never replaces the export
without REPLACE_EXPORT=1."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import torch

from tests.hf.helpers import build_model
from tests.hf.hf_tokenizer import documents, make_hf_tokenizer, write_jsonl

transformers = pytest.importorskip("transformers")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
SCRIPT = os.path.join(ROOT, "examples", "continue_pretraining_cl_ltd.sh")
SEQ, GBS = 64, 4
NOMINAL = 12                                   # steps of full GBS x SEQ batches


def _tiny_llama_with_tokenizer(folder: str) -> None:
    docs = documents(200)
    make_hf_tokenizer(folder, docs)
    vocab = len(transformers.AutoTokenizer.from_pretrained(folder))
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=SEQ,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


def _run(env: dict, extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT], env={**env, **(extra or {})}, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_continued_pretraining_example_imports_trains_with_cl_ltd_and_exports(tmp_path):
    from megatron.checkpointing.whole_model import load_whole
    from tests.examples.fresh_clone import no_python_env
    hf_dir, out = str(tmp_path / "llama"), tmp_path / "out"
    _tiny_llama_with_tokenizer(hf_dir)
    env = {**no_python_env(str(tmp_path)), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_MODEL": hf_dir, "DATA_JSONL": write_jsonl(str(tmp_path / "c.jsonl"),
                                                         documents(300, seed=1)),
           "OUT": str(out), "NPROC": "1", "PRECISION": "", "WORKERS": "2",
           "TRAIN_TOKENS": str(NOMINAL * GBS * SEQ), "GBS": str(GBS), "MBS": "2",
           "LR": "1e-3", "MIN_LR": "1e-4", "EVAL_INTERVAL": "100", "EVAL_ITERS": "2",
           "LOG_INTERVAL": "1"}
    run = _run(env)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]

    # trained from the imported weights, to the end the analyzer sized, with fewer tokens
    # than full batches (seqtru starts at 8 tokens, random-LTD keeps 4 in the middle)
    steps = int(re.search(r"\[analyzer\] the training run takes (\d+) steps", log).group(1))
    assert steps > NOMINAL and f"validation loss at iteration {steps} " in log
    config = load_whole(str(out / "checkpoints"))[2]
    assert config.checkpointing.finetune and config.checkpointing.load == str(out / "imported")
    assert config.tokenizer.tokenizer_type == "HuggingFaceTokenizer"
    assert config.data_efficiency.curriculum.enabled and config.data_efficiency.random_ltd.enabled
    assert (config.model.hidden_dropout, config.model.attention_dropout) == (0.0, 0.0)   # Llama's

    # the export: transformers loads it, its logits are our final checkpoint's, the tokenizer
    # is the model's own and the config names its <s> / </s>
    _, _, args, full = load_whole(str(out / "checkpoints"))
    ours = build_model(args)
    ours.load_state_dict(full, strict=True)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(out / "hf")).eval()
    vocab = theirs.config.vocab_size
    tokens = torch.randint(0, vocab, (2, SEQ), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mine = ours.eval()(tokens, torch.arange(SEQ).expand(2, SEQ), None)[..., :vocab]
        assert (theirs(input_ids=tokens).logits - mine).abs().max().item() < 1e-4
    config = json.load(open(out / "hf" / "config.json"))
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    text = documents(1)[0]
    assert transformers.AutoTokenizer.from_pretrained(str(out / "hf"))(text).input_ids == \
        transformers.AutoTokenizer.from_pretrained(hf_dir)(text).input_ids

    # a rerun stops before anything (the finished export untouched) unless REPLACE_EXPORT=1
    before = {n: os.path.getmtime(out / "hf" / n) for n in os.listdir(out / "hf")}
    again = _run(env)
    assert again.returncode == 2 and again.stderr.startswith("error: ")
    assert "REPLACE_EXPORT=1" in again.stderr and not again.stdout
    assert before == {n: os.path.getmtime(out / "hf" / n) for n in os.listdir(out / "hf")}
    other = _run(env, {"HF_MODEL": str(out / "hf"), "EXPORT": str(tmp_path / "other")})
    assert other.returncode == 2 and f"continues {os.path.realpath(hf_dir)}" in other.stderr
