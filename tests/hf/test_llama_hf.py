"""Hugging Face Llama in and out (tools/checkpoint_util.py --loader hf / --saver hf): a tiny
``LlamaForCausalLM`` made here with transformers (grouped-query attention, a head size
other than hidden / heads, Llama-3 rope scaling, untied) imports into a TP2 x PP2
checkpoint whose model gives its logits (fp32, < 1e-4) and exports back tensor for tensor;
the import prints the flags that continue pretraining it, and pretrain_gpt.py with them,
--finetune and CL seqtru + random-LTD trains from it; what Llama cannot hold is refused."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

from tests.hf.helpers import build_model, checkpoint_util
from tests.token_store import write_random_store

transformers = pytest.importorskip("transformers")
VOCAB, SEQ = 61, 16


def _tiny_llama(folder: str, seed: int = 0, **over) -> transformers.LlamaForCausalLM:
    config = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  intermediate_size=48, max_position_embeddings=64, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                   "factor": 4.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192})
    config.update(over)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    with torch.no_grad():     # every weight random, the norms included
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return model.eval()


def _tensors(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, "model.safetensors"))


def test_transformers_llama_in_to_tp2_pp2_and_out_exactly(tmp_path, capsys):
    hf = _tiny_llama(str(tmp_path / "hf"))
    tool = checkpoint_util()
    tool.main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"), "--save-dir",
               str(tmp_path / "ours"), "--target-tensor-parallel-size", "2",
               "--target-pipeline-parallel-size", "2", "--make-vocab-size-divisible-by", "8"])
    printed = capsys.readouterr().out
    for flag in ("--normalization RMSNorm", "--group-query-attention --num-query-groups 2",
                 "--kv-channels 16", "--swiglu", "--disable-bias-linear",
                 "--use-rope-scaling --rope-scaling-factor 4.0", "--layernorm-epsilon 1e-06",
                 "--untie-embeddings-and-output-weights", "--hidden-dropout 0.0 "
                 "--attention-dropout 0.0"):
        assert flag in printed, flag
    _, _, config, full = tool.load_whole(str(tmp_path / "ours"))
    assert config.model.padded_vocab_size == 64 and config.parallel.tensor_model_parallel_size == 2
    ours = build_model(config)
    ours.load_state_dict(full, strict=True)
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(input_ids=tokens).logits
        mine = ours.eval()(tokens, torch.arange(SEQ).expand(2, SEQ), None)[..., :VOCAB]
    assert (theirs - mine).abs().max().item() < 1e-4

    tool.main(["--saver", "hf", "--load-dir", str(tmp_path / "ours"), "--save-dir",
               str(tmp_path / "back")])
    original, again = _tensors(str(tmp_path / "hf")), _tensors(str(tmp_path / "back"))
    assert original.keys() == again.keys()
    for key, value in original.items():
        assert torch.equal(again[key], value), key
    before = json.load(open(tmp_path / "hf" / "config.json"))
    after = json.load(open(tmp_path / "back" / "config.json"))
    for key in ("architectures", "num_key_value_heads", "head_dim", "rope_parameters",
                "rms_norm_eps", "tie_word_embeddings", "attention_bias", "mlp_bias",
                "intermediate_size", "vocab_size"):
        assert after[key] == before[key], key


def test_continued_pretraining_from_transformers_llama_with_cl_and_random_ltd(tmp_path,
                                                                             capsys):
    """The command the import prints, plus data, CL seqtru and random-LTD flags: the
    checkpoint loads strictly into the model the flags build and trains."""
    import pretrain_gpt
    from megatron.checkpointing import unwrap_model
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    hf = _tiny_llama(str(tmp_path / "hf"), seed=2)
    first: list[dict] = []

    def forward_step(data_iterator, model):   # the weights the first step trains from
        if not first:
            first.append({k: v.clone() for k, v in unwrap_model(model).state_dict().items()})
        return pretrain_gpt.forward_step(data_iterator, model)

    checkpoint_util().main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"), "--save-dir",
                            str(tmp_path / "ours"), "--make-vocab-size-divisible-by", "8"])
    printed = capsys.readouterr().out
    flags = re.search(r"start from it with (.*)$", printed.strip()).group(1).split()
    write_random_store(str(tmp_path / "corpus"), VOCAB, 200, (8, 40))
    state = pretrain(
        pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
        ModelType.encoder_or_decoder, forward_step,
        argv=flags + ["--vocab-size", str(VOCAB), "--make-vocab-size-divisible-by", "8",
                      "--seq-length", str(SEQ), "--micro-batch-size", "2",
                      "--global-batch-size", "4", "--train-iters", "4", "--lr", "1e-4",
                      "--data-path", str(tmp_path / "corpus"), "--split", "90,10,0",
                      "--eval-iters", "1", "--eval-interval", "100", "--num-workers", "0",
                      "--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru",
                      "--curriculum-min-difficulty", "8", "--curriculum-max-difficulty",
                      str(SEQ), "--curriculum-total-steps", "3",
                      "--curriculum-difficulty-step", "8", "--random-ltd",
                      "--random-ltd-min-seqlen", "8", "--random-ltd-total-steps", "3",
                      "--random-ltd-seq-per-step", "8"])
    theirs = hf.state_dict()
    for ours, name in (("embedding.word_embeddings.weight", "model.embed_tokens.weight"),
                       ("output_layer.weight", "lm_head.weight"),
                       ("transformer.layers.3.post_attention_layernorm.weight",
                        "model.layers.3.post_attention_layernorm.weight")):
        assert torch.equal(first[0][ours][:VOCAB], theirs[name]), ours
    assert state.iteration == 4 and all(np.isfinite([loss for _, loss in state.history]))
    assert state.consumed_tokens < 4 * 4 * SEQ          # truncated and dropped tokens


@pytest.mark.parametrize("over, reason", [
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(attention_bias=True, mlp_bias=False), "attention_bias=True with mlp_bias=False"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
     "rope_type 'yarn'"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0,
                           "low_freq_factor": 2.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192}), "low_freq_factor"),
])
def test_llamas_our_flags_cannot_express_are_refused(tmp_path, over, reason):
    _tiny_llama(str(tmp_path / "hf"), **over)
    with pytest.raises(ValueError, match=re.escape(reason)):
        checkpoint_util().main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"),
                                "--save-dir", str(tmp_path / "ours")])
    assert not os.path.exists(tmp_path / "ours")


def test_query_groups_that_do_not_divide_the_target_tp_are_refused(tmp_path):
    _tiny_llama(str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="--target-tensor-parallel-size 4 does not divide "
                                         "--num-query-groups 2"):
        checkpoint_util().main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"),
                                "--save-dir", str(tmp_path / "ours"),
                                "--target-tensor-parallel-size", "4"])


def test_rms_norm_models_llama_cannot_hold_are_refused_on_export(tmp_path):
    from tests.hf.helpers import save_tiny
    save_tiny("llama", str(tmp_path / "gelu"), swiglu=False)
    with pytest.raises(ValueError, match="a GeLU MLP"):
        checkpoint_util().main(["--saver", "hf", "--load-dir", str(tmp_path / "gelu"),
                                "--save-dir", str(tmp_path / "out")])
    save_tiny("gpt_learned", str(tmp_path / "learned"), normalization="RMSNorm")
    with pytest.raises(ValueError, match="--normalization RMSNorm"):
        checkpoint_util().main(["--saver", "hf", "--load-dir", str(tmp_path / "learned"),
                                "--save-dir", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")
