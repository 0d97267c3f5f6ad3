"""tools/checkpoint_util.py: a TP2 checkpoint written by megatron/checkpointing.py converts
to TP1 (equal to the single-process model), to TP1xPP2 and back to TP2 (equal to the
original files), and re-pads the vocabulary when asked."""
from __future__ import annotations

import dataclasses
import importlib.util
import os

import pytest
import torch

from megatron.checkpointing import load_checkpoint, save_checkpoint
from megatron.checkpointing.record import saved_run_config
from megatron.core import parallel_state
from megatron.checkpointing import model_split as checkpoint_layout
from megatron.core.tensor_parallel.random import model_parallel_seed
from megatron.model.gpt_model import GPTModel
from megatron.run_config import ParallelConfig, RunConfig, TokenizerConfig
from tests.parallel.gpt_harness import LAYERS, SEED, Layout, model_config

_TOOL = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools", "checkpoint_util.py")


def _tool():
    spec = importlib.util.spec_from_file_location("checkpoint_util", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(tp: int, pp: int, **model) -> RunConfig:
    """The run a checkpoint records: the harness's model under TP x PP (no real
    vocabulary size unless ``model`` gives one)."""
    return RunConfig(model=dataclasses.replace(model_config(Layout()), **model),
                     parallel=ParallelConfig(tensor_model_parallel_size=tp,
                                             pipeline_model_parallel_size=pp),
                     tokenizer=TokenizerConfig(make_vocab_size_divisible_by=8,
                                               orig_vocab_size=model.get("vocab_size")))


def reference_weights() -> tuple[dict, dict]:
    torch.manual_seed(SEED)
    model = GPTModel(model_config(Layout()))
    return model.state_dict(), checkpoint_layout.param_specs(model)


def save_tp2(rank: int, world_size: int, save_dir: str, full: dict, specs: dict) -> None:
    parallel_state.initialize_model_parallel(2, 1)
    model_parallel_seed(SEED)
    model = GPTModel(model_config(Layout()))
    parts = checkpoint_layout.split_state_dict(full, specs, 2, 1, LAYERS, True)
    model.load_state_dict(parts[(rank, 0)])
    save_checkpoint(7, [model], None, None, {"iteration": 7, "consumed_samples": 56},
                    save_dir=save_dir, run_config=_config(2, 1))
    parallel_state.destroy_model_parallel()


def _model_file(root: str, name: str) -> dict:
    return torch.load(os.path.join(root, "iter_0000007", name, "model_optim_rng.pt"),
                      weights_only=False)


_TP2: list[tuple[str, dict]] = []   # (folder, whole-model state dict), set with the jobs


def two_rank_jobs(tmp_path_factory) -> dict:
    """save_tp2 in the session's shared 2-rank spawn (tests/conftest.py)."""
    full, specs = reference_weights()
    save_dir = str(tmp_path_factory.mktemp("ckpt") / "tp2")
    _TP2[:] = [(save_dir, full)]
    return {"tp2_checkpoint": (save_tp2, save_dir, full, specs)}


@pytest.fixture
def tp2_checkpoint(two_rank_spawn) -> tuple[str, dict]:
    """A TP2 checkpoint of the reference weights, saved by save_tp2 on 2 ranks (in the
    shared spawn)."""
    assert two_rank_spawn["tp2_checkpoint"]
    return _TP2[0]


def test_tp2_checkpoint_converts_to_tp1_and_back(tmp_path, tp2_checkpoint):
    src, full = tp2_checkpoint
    tp1, pp2, back = (str(tmp_path / n) for n in ("tp1", "tp1pp2", "back"))
    tool = _tool()

    tool.main(["--load-dir", src, "--save-dir", tp1, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "1"])
    converted = _model_file(tp1, "mp_rank_00")
    assert converted["optimizer"] is None and converted["extra_state"]["consumed_samples"] == 56
    model = GPTModel(model_config(Layout()))  # loads through the real checkpoint loader
    iteration, _ = load_checkpoint([model], None, None, load_dir=tp1, load_optim=False,
                                   load_rng=False, run_config=_config(1, 1))
    assert iteration == 7
    for key, value in full.items():
        assert torch.equal(model.state_dict()[key], value), key

    tool.main(["--load-dir", src, "--save-dir", pp2, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "2"])
    last = _model_file(pp2, "mp_rank_00_001")["model"]
    assert "transformer.layers.1.mlp.dense_4h_to_h.weight" in last  # global layer 3
    assert torch.equal(last[checkpoint_layout.TIED_COPY_KEY],
                       full[checkpoint_layout.WORD_EMBEDDING_KEY])
    tool.main(["--load-dir", pp2, "--save-dir", back, "--target-tensor-parallel-size", "2",
               "--target-pipeline-parallel-size", "1"])
    for name in ("mp_rank_00", "mp_rank_01"):
        original, again = _model_file(src, name)["model"], _model_file(back, name)["model"]
        assert original.keys() == again.keys()
        for key in original:
            assert torch.equal(original[key], again[key]), f"{name} {key}"


def test_vocab_is_repadded_and_bad_targets_are_rejected(tmp_path, tp2_checkpoint):
    src, full = tp2_checkpoint
    tool = _tool()
    out = str(tmp_path / "tp1")
    tool.main(["--load-dir", src, "--save-dir", out, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "1", "--true-vocab-size", "50"])
    saved = _model_file(out, "mp_rank_00")
    emb = saved["model"]["embedding.word_embeddings.weight"]
    assert emb.shape[0] == 56 and saved_run_config(saved, out).model.padded_vocab_size == 56
    assert torch.equal(emb, full["embedding.word_embeddings.weight"][:56])
    with pytest.raises(ValueError, match="does not divide --num-layers 4"):
        tool.convert(src, str(tmp_path / "bad"), 1, 3)
    with pytest.raises(FileNotFoundError, match="latest_checkpointed_iteration.txt"):
        tool.convert(str(tmp_path), str(tmp_path / "bad"), 1, 1)


def test_saved_orig_vocab_size_repads_without_the_flag(tmp_path):
    """A run with a real tokenizer (no --vocab-size) of 50 tokens pads to 56 rows under
    TP1 and to 64 under TP2 (--make-vocab-size-divisible-by 8). The checkpoint's record carries
    ``orig_vocab_size``, so TP1 -> TP2 -> TP1 re-pads with no --true-vocab-size."""
    from megatron.arguments import parse_args, validate_args
    run = validate_args(parse_args(args=[
        "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
        "--seq-length", "16", "--micro-batch-size", "1", "--lr", "1e-3", "--train-iters", "1",
        "--vocab-size", "1", "--make-vocab-size-divisible-by", "8"]), tokenizer_vocab_size=50)
    assert (run.orig_vocab_size, run.padded_vocab_size) == (50, 56)   # the tokenizer's size
    config = dataclasses.replace(model_config(Layout()), padded_vocab_size=56)
    torch.manual_seed(SEED)
    model = GPTModel(config)
    src, tp2, back = (str(tmp_path / n) for n in ("tp1", "tp2", "back"))
    save_checkpoint(7, [model], None, None, {}, save_dir=src,   # as a tokenizer run leaves it
                    run_config=_config(1, 1, padded_vocab_size=56, vocab_size=50))
    saved = saved_run_config(_model_file(src, "mp_rank_00"), src)
    assert (saved.tokenizer.orig_vocab_size, saved.parallel.tensor_model_parallel_size) == (50, 1)
    tool = _tool()
    tool.main(["--load-dir", src, "--save-dir", tp2, "--target-tensor-parallel-size", "2",
               "--target-pipeline-parallel-size", "1"])
    emb = _model_file(tp2, "mp_rank_01")["model"]["embedding.word_embeddings.weight"]
    assert emb.shape[0] == 32 and not emb[56 - 32:].any()     # rows 56..63: zero padding
    tool.main(["--load-dir", tp2, "--save-dir", back, "--target-tensor-parallel-size", "1",
               "--target-pipeline-parallel-size", "1"])
    again = _model_file(back, "mp_rank_00")
    record = saved_run_config(again, back)
    assert record.model.padded_vocab_size == 56 and record.tokenizer.orig_vocab_size == 50
    for key, value in model.state_dict().items():
        assert torch.equal(again["model"][key], value), key
