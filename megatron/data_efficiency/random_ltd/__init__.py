"""Random layerwise token dropping (random-LTD): schedule, token selection, gather/combine.

The model's layer loop uses :class:`TokenDropPlan`, :func:`gather_tokens`,
:func:`combine_tokens` and :func:`gather_attention_mask` (docs/CONTRACTS.md, "Random-LTD
seam"); training builds a :class:`RandomLTDScheduler` from a :class:`RandomLTDConfig`.
"""
from megatron.data_efficiency.random_ltd.config import RandomLTDConfig
from megatron.data_efficiency.random_ltd.flags import add_random_ltd_args, config_from_args
from megatron.data_efficiency.random_ltd.ops import (combine_tokens, gather_attention_mask,
                                                     gather_tokens)
from megatron.data_efficiency.random_ltd.plan import TokenDropPlan
from megatron.data_efficiency.random_ltd.scheduler import RandomLTDScheduler, mslg_kept_length

__all__ = ["RandomLTDConfig", "RandomLTDScheduler", "TokenDropPlan", "add_random_ltd_args",
           "combine_tokens", "config_from_args", "gather_attention_mask", "gather_tokens",
           "mslg_kept_length"]
