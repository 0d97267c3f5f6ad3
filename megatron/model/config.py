"""TransformerConfig: every model hyper-parameter, built once from the parsed flags."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from megatron.model.moe.config import MoEConfig
from megatron.model.norms import NORMS


def init_method_normal(std: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """In-place N(0, std) initialiser."""
    def init_(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.init.normal_(tensor, mean=0.0, std=std)
    return init_


def scaled_init_method_normal(std: float, num_layers: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """N(0, std / sqrt(2 * num_layers)), for the layers that write into the residual stream."""
    return init_method_normal(std / math.sqrt(2.0 * num_layers))


def default_ffn_hidden_size(hidden_size: int, swiglu: bool) -> int:
    """The MLP width when none is given: ``4h``; with SwiGLU (Megatron's rule) ``2/3 * 4h``
    rounded down to a multiple of 64, which keeps the parameter count of a 4h GELU MLP
    (``4h`` again when ``h`` is too small for one multiple of 64)."""
    if not swiglu:
        return 4 * hidden_size
    return int(8 * hidden_size / 3) // 64 * 64 or 4 * hidden_size


@dataclass(frozen=True)
class TransformerConfig:
    """Model shape, regularisation, initialisation, parallelism and recompute settings.

    Flags map one to one (``--num-layers`` -> ``num_layers`` ...). ``__post_init__`` fills
    the derived defaults and rejects inconsistent values with errors naming the flag.
    """

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    padded_vocab_size: int | None               # None: not known yet (sizing a run, no model)
    max_position_embeddings: int
    ffn_hidden_size: int | None = None          # 4h
    kv_channels: int | None = None              # h / heads
    num_query_groups: int | None = None         # grouped-query attention; None: one per head
    position_embedding_type: str = "learned_absolute"   # or "rope"
    rotary_base: float = 10000.0
    rotary_percent: float = 1.0                 # fraction of each head's dims that rotate
    rope_scaling: bool = False                  # Llama-3's frequency scaling of the rotary
    rope_scaling_factor: float = 8.0            # embedding (rotary.llama3_inv_freq)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_method_std: float = 0.02
    layernorm_epsilon: float = 1e-5
    normalization: str = "LayerNorm"            # a name of norms.NORMS
    swiglu: bool = False
    add_bias_linear: bool = True
    untie_embeddings_and_output_weights: bool = False
    params_dtype: torch.dtype = torch.float32
    use_cpu_initialization: bool = False        # init whole, then split: same weights under any layout
    sequence_parallel: bool = False
    recompute_granularity: str | None = None    # "full" | "selective"
    recompute_method: str | None = None         # "uniform" | "block"
    recompute_num_layers: int | None = None
    distribute_saved_activations: bool = False
    vocab_size: int | None = None               # real vocabulary: ids past it are padding,
                                                # masked out of the softmax (exact re-padding)
    moe: MoEConfig | None = None                # Mixture-of-Experts (megatron/model/moe)

    def __post_init__(self) -> None:
        problems = []
        for name in ("num_layers", "hidden_size", "num_attention_heads", "padded_vocab_size",
                     "max_position_embeddings"):
            if name == "padded_vocab_size" and self.padded_vocab_size is None:
                continue
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be a positive integer, "
                                f"got {getattr(self, name)!r}")
        padded = self.padded_vocab_size
        if self.vocab_size is not None and padded is not None \
                and not 1 <= self.vocab_size <= padded:
            problems.append(f"vocab_size {self.vocab_size} must be in 1..padded_vocab_size "
                            f"({self.padded_vocab_size})")
        if problems:
            raise ValueError("invalid model config:\n  " + "\n  ".join(problems))
        if self.ffn_hidden_size is None:
            self._derive("ffn_hidden_size", default_ffn_hidden_size(self.hidden_size, self.swiglu))
        if self.kv_channels is None:
            if self.hidden_size % self.num_attention_heads != 0:
                problems.append(f"--hidden-size {self.hidden_size} is not divisible by "
                                f"--num-attention-heads {self.num_attention_heads} "
                                "(or give --kv-channels)")
            self._derive("kv_channels", self.hidden_size // self.num_attention_heads)
        if self.position_embedding_type not in ("learned_absolute", "rope"):
            problems.append("--position-embedding-type must be learned_absolute or rope, got "
                            f"{self.position_embedding_type!r}")
        if self.position_embedding_type == "rope":
            rot = int(self.kv_channels * self.rotary_percent)
            if not 0 < self.rotary_percent <= 1 or rot % 2 != 0 or rot == 0:
                problems.append(f"--rotary-percent {self.rotary_percent} x kv-channels "
                                f"{self.kv_channels} must give a positive even number")
        if self.rope_scaling and self.position_embedding_type != "rope":
            problems.append("--use-rope-scaling needs rotary positions (--position-embedding-"
                            "type rope)")
        if self.rope_scaling and not self.rope_scaling_factor >= 1.0:
            problems.append(f"--rope-scaling-factor must be >= 1, got {self.rope_scaling_factor}")
        problems += self._query_group_problems()
        if self.normalization not in NORMS:
            problems.append(f"--normalization must be one of {sorted(NORMS)}, got "
                            f"{self.normalization!r}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"--{name.replace('_', '-')} must be in [0, 1), "
                                f"got {getattr(self, name)}")
        problems += self._recompute_problems()
        if self.moe is not None and self.sequence_parallel:
            problems.append("MoE layers (--num-experts) with --sequence-parallel are not "
                            "supported")
        if problems:
            raise ValueError("invalid model config:\n  " + "\n  ".join(problems))

    def _derive(self, name: str, value) -> None:
        # Frozen: a derived default is filled once, here, while the config is being built.
        object.__setattr__(self, name, value)

    def _query_group_problems(self) -> list[str]:
        heads = self.num_attention_heads
        if self.num_query_groups is None:
            self._derive("num_query_groups", heads)
        groups = self.num_query_groups
        if not isinstance(groups, int) or groups < 1 or heads % groups != 0:
            return [f"--num-query-groups {groups!r} must be a positive divisor of "
                    f"--num-attention-heads {heads}"]
        return []

    def _recompute_problems(self) -> list[str]:
        problems = []
        if self.recompute_granularity not in (None, "full", "selective"):
            problems.append("--recompute-granularity must be full or selective, got "
                            f"{self.recompute_granularity!r}")
        if self.recompute_granularity == "full":
            if self.recompute_method not in ("uniform", "block"):
                problems.append("--recompute-granularity full needs --recompute-method "
                                f"uniform or block, got {self.recompute_method!r}")
            if self.recompute_num_layers is None or self.recompute_num_layers < 1:
                problems.append("--recompute-granularity full needs --recompute-num-layers >= 1")
        elif self.recompute_method is not None:
            problems.append("--recompute-method is only valid with --recompute-granularity full")
        return problems

    @property
    def init_method(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return init_method_normal(self.init_method_std)

    @property
    def output_layer_init_method(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return scaled_init_method_normal(self.init_method_std, self.num_layers)
