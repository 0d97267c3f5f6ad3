"""Which ``transformers`` architecture equals our model, and the config both ways.

The choice reads the model's layer spec (``megatron/model/layer_spec.py``) as the
checkpoint's ``TransformerConfig`` sets it: the norm (``normalization``), the attention's
query groups and head size, the MLP (GeLU or SwiGLU, dense or MoE), biases or none, the
positions. Our GPT layer is pre-norm with sequential residuals and softmax scaled by
``1/sqrt(d)``; with LayerNorm, biases and the tanh-approximate GeLU
(``F.gelu(approximate="tanh")``):

* learned absolute positions -> ``GPT2LMHeadModel`` (``activation_function``
  ``gelu_pytorch_tanh``, the same op as ours);
* rotary positions -> ``GPTNeoXForCausalLM`` with ``use_parallel_residual=False``: NeoX
  has our fused per-head ``[q k v]`` layout, rotate-half rotary on the first
  ``partial_rotary_factor`` of each head, ``inv_freq = base^(-2i/d)``;
* BERT (pre-LN, final LayerNorm, no embedding LayerNorm: Megatron's BERT) ->
  ``MegatronBertForPreTraining`` (``MegatronBertForMaskedLM`` without the binary head).
  ``BertForPreTraining`` is post-LN and cannot hold it.

With RMSNorm and rotary positions: ``LlamaForCausalLM`` (``megatron/hf/llama.py``: SwiGLU,
grouped-query attention, biases or none, Llama-3 rope scaling).

Anything the chosen architecture cannot express exactly (each architecture's ``_holds``
below names it) is refused with a message naming it.
"""
from __future__ import annotations

import torch

from megatron.config_from_flags import run_config_from_flags
from megatron.hf import llama
from megatron.model.config import TransformerConfig
from megatron.run_config import RunConfig

TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new")   # the same function; the first is our op
HF_CLASS = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM",
            "megatron_bert": "MegatronBertForPreTraining", "llama": "LlamaForCausalLM"}


def is_bert(config: RunConfig) -> bool:
    return config.model_type == "bert"


def _classic_layer_problems(model: TransformerConfig) -> list[str]:
    """What a LayerNorm / biased linears / GeLU / one-key-per-head layer (GPT-2, GPT-NeoX,
    Megatron-BERT) cannot hold."""
    problems = []
    if model.normalization != "LayerNorm":
        problems.append(f"--normalization {model.normalization} (this architecture has "
                        "LayerNorm)")
    if model.swiglu:
        problems.append("--swiglu (no transformers architecture pairs a SwiGLU MLP with our "
                        "biased LayerNorm layer)")
    if not model.add_bias_linear:
        problems.append("linear layers without biases")
    heads, groups, head_dim = (model.num_attention_heads, model.num_query_groups,
                               model.kv_channels)
    if groups != heads:
        problems.append(f"grouped-query attention ({groups} query groups for {heads} heads)")
    if head_dim * heads != model.hidden_size:
        problems.append(f"--kv-channels {head_dim} x {heads} heads != --hidden-size "
                        f"{model.hidden_size}")
    return problems


def _holds(arch: str, model: TransformerConfig) -> list[str]:
    """What of our model ``arch`` cannot hold (empty: it holds it exactly)."""
    problems = []
    if model.moe is not None:
        problems.append("MoE layers (--num-experts): no dense transformers architecture "
                        "holds them")
    if arch == "llama":
        return problems + llama.export_problems(model)
    if model.rope_scaling:
        problems.append("--use-rope-scaling (Llama-3 scaling: a Llama model with RMSNorm)")
    problems += _classic_layer_problems(model)
    if arch == "megatron_bert" and model.position_embedding_type == "rope":
        problems.append("BERT with rotary positions")
    return problems


def choose_architecture(config: RunConfig) -> str:
    """The architecture of our checkpoint's model, by the run it was saved by.

    Raises:
        ValueError: no ``transformers`` architecture equals this model.
    """
    model = config.model
    if is_bert(config):
        arch = "megatron_bert"
    elif model.position_embedding_type != "rope":
        arch = "gpt2"
    elif model.normalization == "RMSNorm":
        arch = "llama"
    else:
        arch = "gpt_neox"
    problems = _holds(arch, model)
    if problems:
        raise ValueError("cannot export to transformers without changing the model: "
                         + "; ".join(problems))
    return arch


def hf_config(arch: str, config: RunConfig, vocab_size: int, special: dict[str, int | None]):
    """The ``transformers`` config of our model (``vocab_size`` = the real vocabulary;
    ``special``: the tokenizer's ``bos_token_id`` / ``eos_token_id`` [/ ``pad_token_id``],
    written into a GPT's config)."""
    import transformers
    model = config.model
    hidden, layers, heads = model.hidden_size, model.num_layers, model.num_attention_heads
    ffn = model.ffn_hidden_size
    common = dict(vocab_size=vocab_size, max_position_embeddings=model.max_position_embeddings,
                  tie_word_embeddings=not model.untie_embeddings_and_output_weights,
                  architectures=[HF_CLASS[arch]], initializer_range=model.init_method_std)
    hdrop, adrop, eps = model.hidden_dropout, model.attention_dropout, model.layernorm_epsilon
    if arch == "llama":
        return llama.llama_config(model, vocab_size, {**common, **special})
    if arch == "gpt2":
        common["n_positions"] = common.pop("max_position_embeddings")
        return transformers.GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn,
            activation_function=TANH_GELUS[0], resid_pdrop=hdrop, embd_pdrop=hdrop,
            attn_pdrop=adrop, layer_norm_epsilon=eps, **special, **common)
    if arch == "gpt_neox":
        rope = {"rope_type": "default", "rope_theta": float(model.rotary_base),
                "partial_rotary_factor": float(model.rotary_percent)}
        return transformers.GPTNeoXConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=ffn, hidden_act=TANH_GELUS[0], rope_parameters=rope,
            use_parallel_residual=False, attention_bias=True, layer_norm_eps=eps,
            hidden_dropout=hdrop, attention_dropout=adrop, **special, **common)
    binary = bool(config.extra.get("bert_binary_head", True))
    common["architectures"] = [HF_CLASS[arch] if binary else "MegatronBertForMaskedLM"]
    return transformers.MegatronBertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, hidden_act=TANH_GELUS[0], hidden_dropout_prob=hdrop,
        attention_probs_dropout_prob=adrop, layer_norm_eps=eps, type_vocab_size=2,
        pad_token_id=0, **common)


def _check_import(config) -> list[str]:
    """What of a transformers config our model cannot reproduce."""
    kind = config.model_type
    problems = []
    act = getattr(config, "activation_function", None) or getattr(config, "hidden_act", None)
    if act not in TANH_GELUS:
        problems.append(f"activation {act!r} (ours is the tanh GeLU: {TANH_GELUS})")
    if kind == "gpt2":
        if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx:
            problems.append("attention scaling other than 1/sqrt(d)")
    if kind == "gpt_neox":
        if config.use_parallel_residual:
            problems.append("use_parallel_residual=True (our layer adds attention, then MLP)")
        if not getattr(config, "attention_bias", True):
            problems.append("attention_bias=False")
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            problems.append(f"rope_type {rope.get('rope_type')!r} (ours: default)")
        if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
            problems.append(f"partial_rotary_factor {rope.get('partial_rotary_factor')} "
                            "(our runs rotate whole heads: there is no --rotary-percent flag)")
    return problems


def flags_from_hf_config(config) -> tuple[str, dict]:
    """(architecture, our model flags by ``dest`` name) of a ``transformers`` config.

    Raises:
        ValueError: an architecture or setting our model cannot reproduce exactly.
    """
    kind = config.model_type
    names = {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "megatron-bert": "megatron_bert",
             "llama": "llama"}
    if kind not in names:
        hint = " (post-LN BERT: ours is Megatron's pre-LN BERT, MegatronBert)" \
            if kind == "bert" else ""
        raise ValueError(f"cannot import model_type {kind!r}{hint}; supported: "
                         f"{sorted(names)}")
    problems = llama.import_problems(config) if kind == "llama" else _check_import(config)
    if problems:
        raise ValueError(f"cannot import this {kind} model exactly: " + "; ".join(problems))
    arch = names[kind]
    if arch == "llama":
        return arch, llama.flags_from_llama(config)
    if arch == "gpt2":
        hidden, layers, heads = config.n_embd, config.n_layer, config.n_head
        ffn, positions = config.n_inner or 4 * hidden, config.n_positions
        eps, hdrop, adrop = config.layer_norm_epsilon, config.resid_pdrop, config.attn_pdrop
    else:
        hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
        ffn, positions = config.intermediate_size, config.max_position_embeddings
        eps = config.layer_norm_eps
        hdrop = getattr(config, "hidden_dropout", getattr(config, "hidden_dropout_prob", 0.1))
        adrop = getattr(config, "attention_dropout",
                        getattr(config, "attention_probs_dropout_prob", 0.1))
    ours = dict(num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                ffn_hidden_size=ffn, kv_channels=hidden // heads,
                max_position_embeddings=positions, layernorm_epsilon=eps,
                hidden_dropout=float(hdrop), attention_dropout=float(adrop),
                init_method_std=float(config.initializer_range),
                untie_embeddings_and_output_weights=not config.tie_word_embeddings,
                position_embedding_type="learned_absolute", swiglu=False)
    if arch == "gpt_neox":
        rope = config.rope_parameters
        ours.update(position_embedding_type="rope", rotary_base=float(rope["rope_theta"]),
                    rotary_percent=float(rope.get("partial_rotary_factor", 1.0)))
    if arch == "megatron_bert":
        ours.update(model_type="bert", untie_embeddings_and_output_weights=False)
    return arch, ours


def imported_run_config(flags: dict) -> RunConfig:
    """The ``RunConfig`` of an imported model: its flags (``flags_from_hf_config``, the
    vocabulary and tokenizer), every other at its default; fp32 weights, built whole."""
    extra = ("bert_binary_head",) if flags.get("model_type") == "bert" else ()
    return run_config_from_flags({"params_dtype": torch.float32, "use_cpu_initialization": True,
                                  **flags}, extra)
