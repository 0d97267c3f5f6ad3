"""The Llama-family flags (issue 22): Megatron-LM's names and Megatron-DeepSpeed's
spellings build the same model config; every flag acts or is refused, naming it."""

import pytest

from megatron.arguments import (ArgumentValidationError, parse_args,
                                transformer_config_from_args, validate_args)
from megatron.checkpointing.record import migrate_args_record
from megatron.model.gpt_model import GPTModel
from megatron.model.norms import RMSNorm

BASE = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "32", "--micro-batch-size", "2", "--lr", "1e-3", "--vocab-size", "100",
        "--train-iters", "1"]
# examples_deepspeed/pretrain_llama2_distributed.sh's model flags
MDS_LLAMA2 = ["--normalization", "rmsnorm", "--num-key-value-heads", "2",
              "--disable-bias-linear", "--use-rotary-position-embeddings",
              "--no-position-embedding", "--no-query-key-layer-scaling", "--swiglu",
              "--untie-embeddings-and-output-weights", "--attention-dropout", "0",
              "--hidden-dropout", "0"]
MEGATRON_LM = ["--normalization", "RMSNorm", "--group-query-attention", "--num-query-groups",
               "2", "--disable-bias-linear", "--position-embedding-type", "rope",
               "--no-position-embedding", "--swiglu", "--untie-embeddings-and-output-weights",
               "--attention-dropout", "0", "--hidden-dropout", "0"]


def _config(*extra):
    return transformer_config_from_args(validate_args(parse_args(args=BASE + list(extra))))


@pytest.mark.parametrize("flags", [MDS_LLAMA2, MEGATRON_LM], ids=["mds", "megatron_lm"])
def test_both_spellings_build_the_llama_config(flags):
    config = _config(*flags)
    assert (config.normalization, config.num_query_groups, config.add_bias_linear,
            config.position_embedding_type, config.swiglu,
            config.untie_embeddings_and_output_weights) == ("RMSNorm", 2, False, "rope", True,
                                                             True)
    model = GPTModel(config)
    assert isinstance(model.transformer.final_layernorm, RMSNorm)
    assert not [n for n, _ in model.named_parameters() if "bias" in n]
    assert model.embedding.position_embeddings is None
    qkv = model.transformer.layers[0].self_attention.query_key_value.weight
    assert qkv.shape == ((4 + 2 * 2) * 16, 64)


def test_rope_flags_and_group_query_default():
    config = _config("--position-embedding-type", "rope", "--rotary-base", "500000",
                     "--use-rope-scaling", "--rope-scaling-factor", "32",
                     "--group-query-attention")
    assert (config.rotary_base, config.rope_scaling, config.rope_scaling_factor,
            config.num_query_groups) == (500000.0, True, 32.0, 1)
    assert _config("--use-rotary-position-embeddings", "--use-rope-scaling").rope_scaling_factor == 8.0
    assert _config("--rotary-position-embeddings-theta", "5e5",
                   "--use-rotary-position-embeddings").rotary_base == 500000.0
    plain = _config()
    assert (plain.normalization, plain.num_query_groups, plain.add_bias_linear,
            plain.rope_scaling) == ("LayerNorm", 4, True, False)
    assert _config("--num-key-value-heads", "4").num_query_groups == 4   # = heads: MHA


@pytest.mark.parametrize("extra, flags", [
    (["--num-query-groups", "2"], ["--num-query-groups", "--group-query-attention"]),
    (["--rope-scaling-factor", "8", "--position-embedding-type", "rope"],
     ["--rope-scaling-factor", "--use-rope-scaling"]),
    (["--use-rope-scaling"], ["--use-rope-scaling", "rotary"]),
    (["--no-position-embedding"], ["--no-position-embedding", "rotary"]),
    (["--num-key-value-heads", "2", "--group-query-attention", "--num-query-groups", "1"],
     ["--num-key-value-heads", "--num-query-groups"]),
    (["--num-key-value-heads", "3"], ["--num-query-groups 3", "--num-attention-heads"]),
])
def test_refusals_name_the_flags(extra, flags):
    with pytest.raises(ArgumentValidationError) as info:
        validate_args(parse_args(args=BASE + extra))
    for flag in flags:
        assert flag in str(info.value)


def test_query_groups_must_divide_by_tensor_parallel(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ArgumentValidationError, match="--num-query-groups 2 is not divisible "
                                                      "by --tensor-model-parallel-size 4"):
        validate_args(parse_args(args=BASE + ["--tensor-model-parallel-size", "4",
                                              "--num-key-value-heads", "2"]))


def test_unknown_normalization_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(args=BASE + ["--normalization", "ScaleNorm"])
    assert "choose from ['LayerNorm', 'RMSNorm']" in capsys.readouterr().err


def test_args_saved_before_these_flags_build_the_old_model():
    """A checkpoint's saved args from before the Llama flags (no such keys) rebuild the
    LayerNorm / multi-head / biased model (tools/checkpoint_util.py, tasks, the analyzer)."""
    args = vars(validate_args(parse_args(args=BASE)))
    for key in ("normalization", "num_query_groups", "add_bias_linear", "use_rope_scaling",
                "rope_scaling_factor"):
        del args[key]
    config = migrate_args_record(args).model
    assert (config.normalization, config.num_query_groups, config.add_bias_linear,
            config.rope_scaling) == ("LayerNorm", 4, True, False)
