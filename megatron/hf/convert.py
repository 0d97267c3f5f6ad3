"""Our whole-model state dict <-> a ``transformers`` model directory.

``tools/checkpoint_util.py`` reads and merges (``--saver hf``) or splits and writes
(``--loader hf``) our checkpoints for any TP/PP layout; this module does the rest.
"""
from __future__ import annotations

import torch

from megatron.hf import architecture, hf_dir, mapping
from megatron.hf.architecture import is_bert
from megatron.run_config import RunConfig, TokenizerConfig

_TOKENTYPES = "embedding.tokentype_embeddings.weight"


def _real_vocab(config: RunConfig, full: dict[str, torch.Tensor]) -> int:
    rows = full["embedding.word_embeddings.weight"].shape[0]
    vocab = int(config.tokenizer.orig_vocab_size or config.tokenizer.vocab_size or rows)
    if vocab > rows:
        raise ValueError(f"the checkpoint's real vocabulary size {vocab} exceeds its {rows} "
                         "embedding rows")
    return vocab


def _optional(tok, name: str) -> int | None:
    """A special id the tokenizer may lack (``bos``, ``pad``): None where it has none."""
    try:
        return int(getattr(tok, name))
    except (NotImplementedError, AttributeError):
        return None


def special_token_ids(tokenizer: TokenizerConfig) -> dict[str, int | None]:
    """The run's tokenizer's special ids for a GPT config.json: ``eos_token_id`` = its end
    of document, ``bos_token_id`` = its BOS where it has one (a Llama tokenizer's ``<s>``),
    else the end of document (GPT-2's ``<|endoftext|>`` is both), and ``pad_token_id``
    where it has a PAD. None for both when there is no tokenizer or it does not load."""
    from megatron.tokenizer import build_tokenizer
    none = {"bos_token_id": None, "eos_token_id": None}
    kind = tokenizer.tokenizer_type
    if kind == "NullTokenizer" or kind is None:
        return none
    try:
        tok = build_tokenizer(kind, vocab_file=tokenizer.vocab_file,
                              merge_file=tokenizer.merge_file,
                              tokenizer_model=tokenizer.tokenizer_model,
                              vocab_extra_ids=int(tokenizer.vocab_extra_ids or 0))
        eod = int(tok.eod)
    except (OSError, ValueError, NotImplementedError, AttributeError):
        return none
    bos, pad = _optional(tok, "bos"), _optional(tok, "pad")
    ids = {"bos_token_id": eod if bos is None else bos, "eos_token_id": eod}
    return ids if pad is None else {**ids, "pad_token_id": pad}


def save_hf(full: dict[str, torch.Tensor], config: RunConfig, save_dir: str
            ) -> tuple[str, str]:
    """Write our merged model as a ``transformers`` directory.

    Args:
        full: whole-model (TP1/PP1) state dict, padded vocabulary rows allowed.
        config: the run the checkpoint was saved by.
        save_dir: an absent or empty folder.

    Returns:
        (the written folder, a note for the user: empty, or what was not carried over).
    """
    arch = architecture.choose_architecture(config)
    vocab = _real_vocab(config, full)
    full = dict(full)
    hidden = config.model.hidden_size
    if arch == "megatron_bert" and _TOKENTYPES not in full:
        # no segment table: transformers always adds row 0 of one, so give it zeros
        full[_TOKENTYPES] = torch.zeros(2, hidden, dtype=full["embedding.word_embeddings.weight"].dtype)
    tensors = mapping.to_hf(full, arch, mapping.AttentionShape.of(config.model), vocab)
    hf = architecture.hf_config(arch, config, vocab, special_token_ids(config.tokenizer))
    files, tok_config, note = hf_dir.tokenizer_files(config.tokenizer,
                                                     config.model.max_position_embeddings)
    return hf_dir.write_model_dir(save_dir, hf, tensors, files, tok_config), note


def model_flags(config: RunConfig) -> list[str]:
    """The model flags of ``pretrain_gpt.py`` / ``pretrain_bert.py`` that build an imported
    checkpoint's model (to finetune or continue pretraining it with ``--finetune --load``)."""
    model = config.model
    heads = model.num_attention_heads
    flags = [f"--num-layers {model.num_layers}", f"--hidden-size {model.hidden_size}",
             f"--num-attention-heads {heads}", f"--kv-channels {model.kv_channels}",
             f"--ffn-hidden-size {model.ffn_hidden_size}",
             f"--max-position-embeddings {model.max_position_embeddings}",
             f"--layernorm-epsilon {model.layernorm_epsilon}",
             # the imported config's (Llama: none), not our defaults of 0.1
             f"--hidden-dropout {model.hidden_dropout}",
             f"--attention-dropout {model.attention_dropout}"]
    if model.normalization != "LayerNorm":
        flags.append(f"--normalization {model.normalization}")
    if model.position_embedding_type == "rope":
        flags += ["--position-embedding-type rope", f"--rotary-base {model.rotary_base}"]
    if model.rope_scaling:
        flags.append(f"--use-rope-scaling --rope-scaling-factor {model.rope_scaling_factor}")
    if model.num_query_groups != heads:
        flags.append(f"--group-query-attention --num-query-groups {model.num_query_groups}")
    flags += [flag for flag, on in (("--swiglu", model.swiglu),
                                    ("--disable-bias-linear", not model.add_bias_linear),
                                    ("--untie-embeddings-and-output-weights",
                                     model.untie_embeddings_and_output_weights),
                                    ("--bert-no-binary-head", is_bert(config) and not
                                     config.extra.get("bert_binary_head", True)))
              if on]
    return " ".join(flags).split()


def _bert_heads(full: dict[str, torch.Tensor]) -> bool:
    """Whether the imported BERT has the binary head; drops an all-zero segment table of a
    model without it (our BERT without the binary head has no token types)."""
    binary = "binary_head.weight" in full
    types = full.get(_TOKENTYPES)
    if binary:
        if types is None or types.shape[0] != 2:
            raise ValueError("our BERT with the binary head has 2 token types; this model "
                             f"has {None if types is None else types.shape[0]}")
        return True
    if types is not None:
        if torch.count_nonzero(types):
            raise ValueError("a BERT without the binary head has no token types here, but "
                             "this model's token_type_embeddings are not zero")
        del full[_TOKENTYPES]
    full.pop("pooler.weight", None), full.pop("pooler.bias", None)
    return False


def load_hf(load_dir: str, make_vocab_size_divisible_by: int = 128
            ) -> tuple[RunConfig, dict[str, torch.Tensor]]:
    """Read a local ``transformers`` directory as our model.

    Returns:
        (the ``RunConfig`` to record in the checkpoint, whole-model state dict with the
        real vocabulary rows: the caller pads them for its target layout).
    """
    config, hf = hf_dir.read_model_dir(load_dir)
    arch, ours = architecture.flags_from_hf_config(config)
    tied = not ours["untie_embeddings_and_output_weights"]
    shape = architecture.imported_run_config(ours).model   # the vocabulary is not needed
    full = mapping.from_hf(hf, arch, mapping.AttentionShape.of(shape), ours["num_layers"],
                           tied)
    if arch == "megatron_bert":
        ours["bert_binary_head"] = _bert_heads(full)
    vocab = full["embedding.word_embeddings.weight"].shape[0]
    if vocab != config.vocab_size:
        raise ValueError(f"{load_dir}: config vocab_size {config.vocab_size} but the "
                         f"embedding has {vocab} rows")
    # padded_vocab_size: the rows held now; the writer pads them for its layout
    ours.update(orig_vocab_size=vocab, padded_vocab_size=vocab,
                make_vocab_size_divisible_by=make_vocab_size_divisible_by,
                **hf_dir.hf_tokenizer_args(load_dir))
    if "tokenizer_type" not in ours:
        ours.update(tokenizer_type="NullTokenizer", vocab_size=vocab)
    return architecture.imported_run_config(ours), full
