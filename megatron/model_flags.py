"""The model flags (Megatron-LM's names, Megatron-DeepSpeed's spellings as aliases) and
their rules; part of the arguments layer (``megatron.arguments`` parses and validates,
``megatron.config_from_flags`` turns them into the ``TransformerConfig``)."""
from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--num-layers", type=int, default=None)
    g.add_argument("--hidden-size", type=int, default=None)
    g.add_argument("--ffn-hidden-size", type=int, default=None)
    g.add_argument("--num-attention-heads", type=int, default=None)
    g.add_argument("--kv-channels", type=int, default=None)
    g.add_argument("--seq-length", type=int, default=None)
    g.add_argument("--max-position-embeddings", type=int, default=None)
    g.add_argument("--position-embedding-type", default="learned_absolute",
                   choices=["learned_absolute", "rope"])
    g.add_argument("--use-rotary-position-embeddings", action="store_true",
                   help="Megatron-DeepSpeed's spelling of --position-embedding-type rope")
    g.add_argument("--no-position-embedding", action="store_false",
                   dest="add_position_embedding",
                   help="no learned position table: needs rotary positions (which have none)")
    g.add_argument("--rotary-base", "--rotary-position-embeddings-theta", type=float,
                   default=10000.0)
    g.add_argument("--use-rope-scaling", action="store_true",
                   help="Llama-3's rope frequency scaling (low/high frequency factors 1 and "
                        "4 over 8192 original positions)")
    g.add_argument("--rope-scaling-factor", type=float, default=None,
                   help="with --use-rope-scaling (default 8.0)")
    g.add_argument("--normalization", default="LayerNorm", type=_normalization,
                   help="LayerNorm or RMSNorm (Megatron-DeepSpeed's layernorm / rmsnorm too)")
    g.add_argument("--group-query-attention", action="store_true")
    g.add_argument("--num-query-groups", type=int, default=None,
                   help="with --group-query-attention (default 1)")
    g.add_argument("--num-key-value-heads", type=int, default=None,
                   help="Megatron-DeepSpeed's spelling: grouped-query attention with this "
                        "many query groups")
    g.add_argument("--disable-bias-linear", action="store_false", dest="add_bias_linear",
                   help="no bias in any linear layer (attention, MLP, experts)")
    g.add_argument("--no-query-key-layer-scaling", action="store_true",
                   help="accepted for Megatron-DeepSpeed scripts; a no-op here: the softmax "
                        "is computed in fp32, where scaling the scores by 1/layer and back "
                        "changes nothing")
    g.add_argument("--swiglu", action="store_true")
    g.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    g.add_argument("--init-method-std", type=float, default=0.02)
    g.add_argument("--hidden-dropout", type=float, default=0.1)
    g.add_argument("--attention-dropout", type=float, default=0.1)
    g.add_argument("--layernorm-epsilon", type=float, default=1e-5)
    g.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    g.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary size when no tokenizer is used (--tokenizer-type NullTokenizer)")


def _normalization(name: str) -> str:
    """``--normalization``: a name of ``megatron.model.norms.NORMS``, any letter case."""
    from megatron.model.norms import NORMS
    found = {n.lower(): n for n in NORMS}.get(name.lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"choose from {sorted(NORMS)}, got {name!r}")
    return found


def _validate_model_variant(args: argparse.Namespace, errors: list[str]) -> None:
    """The Llama-family flags: Megatron-DeepSpeed's spellings become Megatron-LM's values
    (``position_embedding_type``, ``num_query_groups``), and no flag goes unused."""
    if args.use_rotary_position_embeddings:
        args.position_embedding_type = "rope"
    if not args.add_position_embedding and args.position_embedding_type != "rope":
        errors.append("--no-position-embedding needs rotary positions (--position-embedding-"
                      "type rope or --use-rotary-position-embeddings): this codebase has no "
                      "model without positions")
    if args.rope_scaling_factor is not None and not args.use_rope_scaling:
        errors.append("--rope-scaling-factor needs --use-rope-scaling")
    if args.use_rope_scaling and args.position_embedding_type != "rope":
        errors.append("--use-rope-scaling needs rotary positions")
    groups, kv_heads = args.num_query_groups, args.num_key_value_heads
    if groups is not None and not args.group_query_attention:
        errors.append("--num-query-groups needs --group-query-attention")
    elif kv_heads is not None and groups is not None and kv_heads != groups:
        errors.append(f"--num-key-value-heads {kv_heads} and --num-query-groups {groups} "
                      "differ")
    elif kv_heads is not None:
        args.num_query_groups = kv_heads
    elif args.group_query_attention:
        args.num_query_groups = groups or 1        # Megatron-LM's default
    heads = args.num_attention_heads
    if args.num_query_groups is not None and heads and heads % args.num_query_groups:
        errors.append(f"--num-query-groups {args.num_query_groups} does not divide "
                      f"--num-attention-heads {heads}")
    tp = args.tensor_model_parallel_size
    if args.num_query_groups is not None and tp and args.num_query_groups % tp:
        errors.append(f"--num-query-groups {args.num_query_groups} is not divisible by "
                      f"--tensor-model-parallel-size {tp} (each rank holds whole query "
                      "groups)")


def validate_model(args: argparse.Namespace, errors: list[str]) -> None:
    """The model flags' rules and derived values (``max_position_embeddings``,
    ``kv_channels``, ``ffn_hidden_size``, recompute defaults), and the data flags that
    decide whether a vocabulary exists; problems appended to ``errors``."""
    if args.max_position_embeddings is None:
        args.max_position_embeddings = args.seq_length
    _validate_model_variant(args, errors)
    h, heads = args.hidden_size, args.num_attention_heads
    if h is not None and heads is not None:
        if h % heads != 0 and args.kv_channels is None:
            errors.append(f"--hidden-size ({h}) must be divisible by --num-attention-heads "
                          f"({heads}) unless --kv-channels is given")
        if args.kv_channels is None and heads > 0:
            args.kv_channels = h // heads
        if args.ffn_hidden_size is None:
            from megatron.model.config import default_ffn_hidden_size
            args.ffn_hidden_size = default_ffn_hidden_size(h, args.swiglu)
    if (args.position_embedding_type == "learned_absolute" and args.seq_length is not None
            and args.max_position_embeddings < args.seq_length):
        errors.append(f"--seq-length ({args.seq_length}) exceeds --max-position-embeddings "
                      f"({args.max_position_embeddings}) under --position-embedding-type "
                      "learned_absolute")
    for flag in ("hidden_dropout", "attention_dropout"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            errors.append(f"--{flag.replace('_', '-')} must be within [0, 1)")
    if args.recompute_method is not None and args.recompute_granularity != "full":
        errors.append("--recompute-method needs --recompute-granularity full")
    if args.recompute_granularity == "full" and args.recompute_method is None:
        args.recompute_method = "uniform"
    if args.recompute_granularity == "full" and args.recompute_num_layers is None:
        args.recompute_num_layers = 1
    if args.data_path is None and args.train_data_path is None and args.vocab_size is None:
        errors.append("give --data-path (or --train-data-path), or --vocab-size for synthetic data")
    if args.data_path and (args.train_data_path or args.valid_data_path or args.test_data_path):
        errors.append("give either --data-path (with --split) or --train-data-path / "
                      "--valid-data-path / --test-data-path, not both")
