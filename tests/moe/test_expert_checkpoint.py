"""Expert weights between expert-parallel files and one model (pure renaming), and
the checkpoint package's reading of Megatron-LM's mp_rank_TT[_PPP]_EEE folders."""
import pytest
import torch

from megatron.checkpointing.whole_model import merge_expert_ranks
from megatron.model.config import TransformerConfig
from megatron.model.moe.checkpoint import merge_expert_parallel, split_expert_parallel
from megatron.model.moe.config import MoEConfig
from megatron.run_config import ParallelConfig, RunConfig


def _whole(num_experts=4):
    state = {"embedding.word_embeddings.weight": torch.arange(6.0),
             "transformer.layers.0.mlp.router.weight": torch.ones(4, 2)}
    for e in range(num_experts):
        state[f"transformer.layers.0.mlp.experts.{e}.dense_h_to_4h.weight"] = torch.full((2,), e)
    return state


def test_split_and_merge_round_trip():
    whole = _whole()
    parts = split_expert_parallel(whole, 4, 2)
    assert sorted(k for k in parts[1] if ".experts." in k) == [
        "transformer.layers.0.mlp.experts.0.dense_h_to_4h.weight",
        "transformer.layers.0.mlp.experts.1.dense_h_to_4h.weight"]
    assert parts[1]["transformer.layers.0.mlp.experts.0.dense_h_to_4h.weight"][0] == 2
    merged = merge_expert_parallel(parts, 4)
    assert merged.keys() == whole.keys() and all(torch.equal(merged[k], whole[k]) for k in whole)


def test_merge_refuses_ranks_of_different_models():
    parts = split_expert_parallel(_whole(), 4, 2)
    parts[1]["embedding.word_embeddings.weight"] = torch.zeros(6)
    with pytest.raises(ValueError, match="not one model"):
        merge_expert_parallel(parts, 4)
    with pytest.raises(ValueError, match="does not divide"):
        split_expert_parallel(_whole(), 4, 3)


@pytest.mark.parametrize("pp", [1, 2])
def test_checkpoint_util_reads_expert_parallel_folders(pp):
    moe = MoEConfig(num_experts=4, moe_layer_ids=frozenset({0, 1}), expert_model_parallel_size=2)
    record = RunConfig(
        model=TransformerConfig(num_layers=2, hidden_size=8, num_attention_heads=2,
                                padded_vocab_size=8, max_position_embeddings=8, moe=moe),
        parallel=ParallelConfig(expert_model_parallel_size=2,
                                pipeline_model_parallel_size=pp)).to_dict()
    parts = split_expert_parallel(_whole(), 4, 2)
    found = {}
    for stage in range(pp):
        for ep in range(2):
            key = (0, ep) if pp == 1 else (0, stage, ep)    # mp_rank_00_EEE / _PPP_EEE
            found[key] = {"run_config": record, "model": parts[ep]}
    merged = merge_expert_ranks(found)
    assert sorted(merged) == [(0, s) for s in range(pp)]
    assert merged[(0, 0)]["model"].keys() == _whole().keys()
    del found[next(iter(found))]
    with pytest.raises(FileNotFoundError, match="expert-parallel ranks"):
        merge_expert_ranks(found)
