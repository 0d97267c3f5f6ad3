"""tools/checkpoint_util.py --saver hf / --loader hf: GPT (learned and rotary positions)
and BERT, from TP1/PP1 and TP2/PP2 checkpoints. The exported transformers model gives our
logits (fp32, CPU, < 1e-4) on the real vocabulary; export -> import is exact."""
from __future__ import annotations

import json
import os

import pytest
import torch

from tests.hf.helpers import (HEADS, KINDS, SEQ, VOCAB, as_config, build_model,
                              checkpoint_util, our_logits, save_tiny)

transformers = pytest.importorskip("transformers")


def _hf_model(folder: str, args: dict):
    if args.get("model_type") == "bert":
        return transformers.MegatronBertForPreTraining.from_pretrained(folder).eval()
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


def _hf_logits(hf, tokens: torch.Tensor, args: dict):
    with torch.no_grad():
        if args.get("model_type") == "bert":
            types = torch.zeros_like(tokens)
            types[:, tokens.shape[1] // 2:] = 1
            out = hf(input_ids=tokens, attention_mask=torch.ones_like(tokens),
                     token_type_ids=types)
            return out.prediction_logits, out.seq_relationship_logits
        return hf(input_ids=tokens).logits, None


def _whole(folder: str) -> dict[str, torch.Tensor]:
    return checkpoint_util().load_whole(folder)[3]


@pytest.mark.parametrize("layout", [(1, 1), (2, 2)])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_export_matches_logits_and_import_round_trips(tmp_path, kind, layout):
    tool = checkpoint_util()
    model, args = save_tiny(kind, str(tmp_path / "ours"))
    src = str(tmp_path / "ours")
    if layout != (1, 1):
        src = str(tmp_path / "ours_tp2pp2")
        tool.main(["--load-dir", str(tmp_path / "ours"), "--save-dir", src,
                   "--target-tensor-parallel-size", "2", "--target-pipeline-parallel-size", "2"])
    hf_dir = str(tmp_path / "hf")
    tool.main(["--saver", "hf", "--load-dir", src, "--save-dir", hf_dir])

    config = json.load(open(os.path.join(hf_dir, "config.json")))
    assert config["vocab_size"] == VOCAB          # padded rows are not exported
    hf = _hf_model(hf_dir, args)
    assert hf.get_input_embeddings().weight.shape[0] == VOCAB
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    ours, ours_binary = our_logits(model, tokens, args)
    theirs, their_binary = _hf_logits(hf, tokens, args)
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max().item() < 1e-4
    if ours_binary is not None:
        assert (their_binary - ours_binary).abs().max().item() < 1e-4

    back = str(tmp_path / "back")
    tp, pp = layout
    tool.main(["--loader", "hf", "--load-dir", hf_dir, "--save-dir", back,
               "--target-tensor-parallel-size", str(tp), "--target-pipeline-parallel-size",
               str(pp), "--make-vocab-size-divisible-by", "8"])
    original, again = _whole(src), _whole(back)
    assert original.keys() == again.keys()
    for key, value in original.items():
        if value.shape != again[key].shape or key.endswith(("word_embeddings.weight",
                                                            "output_layer.weight",
                                                            "lm_head.bias")):
            # vocabulary rows: the real ones come back exactly, the padding as zeros
            assert torch.equal(again[key][:VOCAB], value[:VOCAB]), key
            assert not again[key][VOCAB:].any(), key
        else:
            assert torch.equal(again[key], value), key


def test_imported_checkpoint_loads_into_our_model_with_the_same_logits(tmp_path):
    """The import is a real checkpoint: megatron.checkpointing loads it (strict), and the
    model computes the exported model's logits."""
    from megatron.checkpointing import load_checkpoint
    tool = checkpoint_util()
    model, args = save_tiny("gpt_learned", str(tmp_path / "ours"))
    tool.main(["--saver", "hf", "--load-dir", str(tmp_path / "ours"), "--save-dir",
               str(tmp_path / "hf")])
    tool.main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"), "--save-dir",
               str(tmp_path / "back"), "--make-vocab-size-divisible-by", "8"])
    fresh = build_model(args)
    iteration, _ = load_checkpoint([fresh], None, None, load_dir=str(tmp_path / "back"),
                                   finetune=True, run_config=as_config(args))
    assert iteration == 0
    tokens = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(1))
    assert torch.equal(our_logits(fresh.eval(), tokens, args)[0],
                       our_logits(model, tokens, args)[0])


def test_bert_without_binary_head_exports_as_masked_lm(tmp_path):
    tool = checkpoint_util()
    model, args = save_tiny("bert", str(tmp_path / "ours"), bert_binary_head=False)
    tool.main(["--saver", "hf", "--load-dir", str(tmp_path / "ours"), "--save-dir",
               str(tmp_path / "hf")])
    hf = transformers.MegatronBertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = hf(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits
    ours, _ = our_logits(model, tokens, args)
    assert (theirs - ours).abs().max().item() < 1e-4
    tool.main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"), "--save-dir",
               str(tmp_path / "back"), "--make-vocab-size-divisible-by", "8"])
    again = _whole(str(tmp_path / "back"))
    assert "embedding.tokentype_embeddings.weight" not in again and "pooler.weight" not in again


def test_models_transformers_cannot_hold_are_refused(tmp_path):
    tool = checkpoint_util()
    save_tiny("gpt_learned", str(tmp_path / "swiglu"), swiglu=True)
    with pytest.raises(ValueError, match="--swiglu"):
        tool.main(["--saver", "hf", "--load-dir", str(tmp_path / "swiglu"), "--save-dir",
                   str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")
    neox = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=HEADS, intermediate_size=64,
                                      use_parallel_residual=True, hidden_act="gelu_new")
    transformers.GPTNeoXForCausalLM(neox).save_pretrained(str(tmp_path / "neox"))
    with pytest.raises(ValueError, match="use_parallel_residual"):
        tool.main(["--loader", "hf", "--load-dir", str(tmp_path / "neox"), "--save-dir",
                   str(tmp_path / "x")])
    bert = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=HEADS, intermediate_size=64)
    transformers.BertForPreTraining(bert).save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="post-LN"):
        tool.main(["--loader", "hf", "--load-dir", str(tmp_path / "bert"), "--save-dir",
                   str(tmp_path / "y")])


def test_tokenizer_files_travel_both_ways(tmp_path):
    """The run's GPT-2 BPE goes into the export with a GPT2Tokenizer config that encodes as
    ours does; the import points the checkpoint's tokenizer flags at the HF directory."""
    from megatron.tokenizer import build_tokenizer
    from tests.hf.helpers import corpus, make_bpe
    vocab_file, merge_file = make_bpe(str(tmp_path / "tok"))
    ours_tok = build_tokenizer("GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    tool = checkpoint_util()
    save_tiny("gpt_learned", str(tmp_path / "ours"), tokenizer_type="GPT2BPETokenizer",
              vocab_file=vocab_file, merge_file=merge_file, vocab_size=None,
              orig_vocab_size=ours_tok.vocab_size, padded_vocab_size=304)
    tool.main(["--saver", "hf", "--load-dir", str(tmp_path / "ours"), "--save-dir",
               str(tmp_path / "hf")])
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert type(hf_tok).__name__.startswith("GPT2Tokenizer")
    for text in corpus(5, seed=11) + ["Hello, wörld!  two  spaces\n"]:
        assert hf_tok.encode(text) == ours_tok.tokenize(text), text
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert config["eos_token_id"] == config["bos_token_id"] == ours_tok.eod   # <|endoftext|>
    assert config.get("pad_token_id") is None
    tool.main(["--loader", "hf", "--load-dir", str(tmp_path / "hf"), "--save-dir",
               str(tmp_path / "back")])
    config = tool.load_whole(str(tmp_path / "back"))[2]
    assert config.tokenizer.tokenizer_type == "GPT2BPETokenizer"
    assert config.tokenizer.vocab_file == str(tmp_path / "hf" / "vocab.json")
    assert config.model.padded_vocab_size == 384          # 300 -> multiple of 128 (default)


def test_import_reads_original_gpt2_files(tmp_path):
    """GPT-2 as first published: pytorch_model.bin with bare GPT2Model names (no
    "transformer." prefix) and the attention-mask buffers; gelu_new. It imports, and our
    model's logits are the transformers model's (gelu_new and our tanh GeLU agree to ~1e-7)."""

    from megatron.checkpointing import load_checkpoint
    from tests.hf.helpers import LAYERS, make_tiny_gpt2
    folder = make_tiny_gpt2(str(tmp_path / "gpt2"), positions=SEQ)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()
            if k != "lm_head.weight"}
    for i in range(LAYERS):
        bare[f"h.{i}.attn.bias"] = torch.tril(torch.ones(SEQ, SEQ))[None, None]
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save(bare, os.path.join(folder, "pytorch_model.bin"))
    assert json.load(open(os.path.join(folder, "config.json")))["activation_function"] == "gelu_new"
    checkpoint_util().main(["--loader", "hf", "--load-dir", folder, "--save-dir",
                            str(tmp_path / "ours")])
    config = checkpoint_util().load_whole(str(tmp_path / "ours"))[2]
    ours = build_model(config)
    load_checkpoint([ours], None, None, load_dir=str(tmp_path / "ours"), finetune=True,
                    run_config=config)
    tokens = torch.randint(0, 300, (2, SEQ), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = hf(input_ids=tokens).logits
        mine = ours.eval()(tokens, torch.arange(SEQ).expand(2, SEQ), None)[..., :300]
    assert (theirs - mine).abs().max().item() < 1e-4
