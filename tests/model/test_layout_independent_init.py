"""--use-cpu-initialization: a pipeline stage builds exactly its part of the single-process
model (same seed), whatever it built before and however its torch RNG was seeded.

The stages are simulated in one process (pipeline size and rank patched), so GPT with tied
and untied output, and BERT with its heads, are checked cheaply; the real multi-rank runs
are in tests/parallel. The tied embedding copy of the last stage is synchronised by an
all-reduce at construction (tests/model/test_gpt_tp.py), so it is skipped here.
"""
import re

import pytest
import torch

from megatron.core import parallel_state as ps
from megatron.core.tensor_parallel.layers import set_initialization_seed
from megatron.model import BertModel, GPTModel, TransformerConfig
from megatron.model.module import MegatronModule

SEED, LAYERS = 21, 4


def _config(**kw) -> TransformerConfig:
    return TransformerConfig(num_layers=LAYERS, hidden_size=16, num_attention_heads=2,
                             padded_vocab_size=32, max_position_embeddings=8,
                             use_cpu_initialization=True, **kw)


BUILDERS = {
    "gpt": lambda pre, post: GPTModel(_config(), pre_process=pre, post_process=post),
    "gpt-untied-rope": lambda pre, post: GPTModel(
        _config(untie_embeddings_and_output_weights=True, position_embedding_type="rope"),
        pre_process=pre, post_process=post),
    "bert": lambda pre, post: BertModel(_config(), pre_process=pre, post_process=post),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_stage_holds_the_single_process_weights(name, monkeypatch):
    torch.manual_seed(SEED)
    whole = BUILDERS[name](True, True).state_dict()
    monkeypatch.setattr(MegatronModule, "initialize_word_embeddings", lambda self: None)
    monkeypatch.setattr(ps, "get_pipeline_model_parallel_world_size", lambda: 2)
    per_stage, seen = LAYERS // 2, set()
    for stage in (1, 0):  # the last stage first: construction order must not matter
        monkeypatch.setattr(ps, "get_pipeline_model_parallel_rank", lambda s=stage: s)
        torch.manual_seed(SEED + 100 * stage)   # as megatron.initialize.set_seeds does
        set_initialization_seed(SEED)
        part = BUILDERS[name](stage == 0, stage == 1).state_dict()
        for key, value in part.items():
            if key == "word_embeddings.weight":
                continue
            key = re.sub(r"layers\.(\d+)\.",
                         lambda m: f"layers.{int(m[1]) + stage * per_stage}.", key)
            assert torch.equal(value, whole[key]), f"{name} stage {stage}: {key}"
            seen.add(key)
    assert seen == set(whole)  # the stages together hold the whole model


def test_reseeding_torch_changes_the_weights():
    """The keys follow the seed: another torch seed gives other weights (and the
    registered base seed lapses once torch is reseeded)."""
    set_initialization_seed(SEED)
    torch.manual_seed(SEED + 1)
    a = BUILDERS["gpt"](True, True).state_dict()
    torch.manual_seed(SEED)
    b = BUILDERS["gpt"](True, True).state_dict()
    assert not torch.equal(a["transformer.layers.0.mlp.dense_h_to_4h.weight"],
                           b["transformer.layers.0.mlp.dense_h_to_4h.weight"])
