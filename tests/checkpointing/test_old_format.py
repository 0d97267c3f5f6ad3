"""Checkpoints written by older code still load (tests/fixtures/old_format/, made by
tests/fixtures/make_old_format.py at commit 27e468a, whose record is the whole argparse
namespace): a GPT run resumes from one and trains on as the uninterrupted run did, the
layout converter and the one-model loader read them (GPT TP1 and TP2 x PP2, BERT), the
analyzer's reference and the evaluation model are built from them, and they export to
Hugging Face with our logits."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from megatron.checkpointing.whole_model import load_model, load_whole
from tests.tools.tool_loader import load_tool
from tests.training.helpers import VOCAB, run_tiny

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "old_format")
GPT, GPT_TP2PP2, BERT = (os.path.join(FIXTURES, n) for n in ("gpt_tp1", "gpt_tp2pp2",
                                                              "bert_tp1"))


def _copy(src: str, tmp_path) -> str:
    dst = str(tmp_path / os.path.basename(src))
    shutil.copytree(src, dst)
    return dst


def test_old_gpt_checkpoint_resumes_as_the_uninterrupted_run(tmp_path):
    """Weights, Adam state, RNGs, LR schedule, counters and the run record of an old
    checkpoint saved at step 3 of 6: steps 4..6 and the last validation repeat the
    uninterrupted run (recorded when the fixture was made; the same on any one machine,
    so compared to 1e-6)."""
    made = json.load(open(os.path.join(FIXTURES, "gpt_tp1.json")))
    state = run_tiny(*made["flags"], "--load", _copy(GPT, tmp_path), iters=6)
    assert [it for it, _ in state.history] == [4, 5, 6]
    want = [loss for it, loss in made["history"] if it > 3]
    assert [loss for _, loss in state.history] == pytest.approx(want, rel=1e-6)
    assert state.last_validation == pytest.approx(made["last_validation"], rel=1e-6)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_old_checkpoints_merge_convert_and_rebuild(tmp_path):
    it, _, config, whole = load_whole(GPT)
    assert it == 3 and config.model.num_layers == 4
    _same(whole, load_whole(GPT_TP2PP2)[3])                  # the old converter's output
    tool = load_tool("checkpoint_util")
    tool.main(["--load-dir", GPT, "--save-dir", str(tmp_path / "tp2"),
               "--target-tensor-parallel-size", "2", "--target-pipeline-parallel-size", "1"])
    _same(whole, load_whole(str(tmp_path / "tp2"))[3])
    loaded = load_model(GPT, device="cpu")                   # the analyzer's / tasks' loader
    _same(whole, loaded.model.state_dict())
    assert loaded.run_record["seq_length"] == 16 and loaded.iteration == 3

    _, _, bert_config, bert = load_whole(BERT)
    assert bert_config.model_type == "bert" and "binary_head.weight" in bert
    tool.main(["--load-dir", BERT, "--save-dir", str(tmp_path / "bert_pp2"),
               "--target-tensor-parallel-size", "1", "--target-pipeline-parallel-size", "2"])
    _same(bert, load_whole(str(tmp_path / "bert_pp2"))[3])
    _same(bert, load_model(BERT, device="cpu").model.state_dict())


def test_old_checkpoint_exports_to_hugging_face(tmp_path):
    transformers = pytest.importorskip("transformers")
    load_tool("checkpoint_util").main(["--saver", "hf", "--load-dir", GPT, "--save-dir",
                                       str(tmp_path / "hf")])
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    ours = load_model(GPT, device="cpu", parallel_output=False).model
    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(input_ids=tokens).logits
        mine = ours(tokens, torch.arange(16).expand(2, 16), None)[..., :VOCAB]
    assert (theirs - mine).abs().max().item() < 1e-4
