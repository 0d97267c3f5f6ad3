"""Train a tiny 4-expert GPT under EP / EP x TP / EP x PP layouts, or in one process.

As ``tests/parallel/gpt_harness.py`` (same batches, optimizer, loss), with MoE layers 0
and 2, top-2 routing and the auxiliary loss on. Capacity is per micro-batch and rank, so
a finite capacity drops the same assignments in every layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.checkpointing import model_split as checkpoint_layout
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
from megatron.initialize import set_seeds
from megatron.model.config import TransformerConfig
from megatron.model.gpt_model import GPTModel
from megatron.model.moe.aux_loss import set_aux_loss_grad_scale
from megatron.model.moe.checkpoint import to_global_expert_ids
from megatron.model.moe.config import MoEConfig, moe_layer_ids
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
from tests.parallel.gpt_harness import (LAYERS, LLAMA_SHAPE, SEED, SEQ, STEPS, VOCAB,
                                        forward_step, microbatches)

EXPERTS = 4


@dataclass(frozen=True)
class EPLayout:
    ep: int = 1
    tp: int = 1
    pp: int = 1
    dp: int = 1
    num_microbatches: int = 2
    micro_batch_size: int = 2
    capacity_factor: float | None = None    # None: no token dropped
    distributed_optimizer: bool = False
    llama: bool = False     # gpt_harness.LLAMA_SHAPE (RMSNorm, GQA, SwiGLU experts, no biases)

    @property
    def name(self) -> str:
        cap = "nodrop" if self.capacity_factor is None else f"cf{self.capacity_factor}"
        opt = "+distopt" if self.distributed_optimizer else ""
        return (f"EP{self.ep}xTP{self.tp}xPP{self.pp}xDP{self.dp}/{self.num_microbatches}mb/"
                f"{cap}{opt}" + ("+llama" if self.llama else ""))


def model_config(layout: EPLayout) -> TransformerConfig:
    moe = MoEConfig(num_experts=EXPERTS, moe_layer_ids=moe_layer_ids(LAYERS, 2), topk=2,
                    aux_loss_coeff=0.1, train_capacity_factor=layout.capacity_factor,
                    eval_capacity_factor=layout.capacity_factor, min_capacity=0,
                    expert_model_parallel_size=layout.ep)
    return TransformerConfig(num_layers=LAYERS, hidden_size=32, num_attention_heads=4,
                             padded_vocab_size=VOCAB, max_position_embeddings=SEQ,
                             hidden_dropout=0.0, attention_dropout=0.0,
                             use_cpu_initialization=True, moe=moe,
                             **(LLAMA_SHAPE if layout.llama else {}))


def optimizer_config(layout: EPLayout) -> OptimizerConfig:
    return OptimizerConfig(lr=3e-3, weight_decay=0.01, adam_beta2=0.95, adam_eps=1e-3,
                           clip_grad=0.5, use_distributed_optimizer=layout.distributed_optimizer)


def global_batch(step: int, rows: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED + step)
    return torch.randint(0, VOCAB, (rows, SEQ + 1), generator=g)


def train(model, layout: EPLayout, dp_rank: int) -> dict:
    optimizer = get_megatron_optimizer([model], optimizer_config(layout))
    schedule = get_forward_backward_func()
    per_rank = layout.micro_batch_size * layout.num_microbatches
    losses, norms, dropped = [], [], []
    for step in range(STEPS):
        tokens = global_batch(step, per_rank * layout.dp)[dp_rank * per_rank:
                                                           (dp_rank + 1) * per_rank]
        optimizer.zero_grad()
        set_aux_loss_grad_scale(1.0 / layout.num_microbatches)
        for m in model.modules():
            if hasattr(m, "stats"):
                m.stats.reset()
        loss_dicts = schedule(forward_step_func=forward_step,
                              data_iterator=iter(microbatches(tokens, layout.micro_batch_size)),
                              model=[model], num_microbatches=layout.num_microbatches,
                              seq_length=SEQ, micro_batch_size=layout.micro_batch_size)
        finalize_model_grads([model])
        ok, norm, _ = optimizer.step()
        assert ok, f"{layout.name}: step {step} skipped"
        losses.append([d["lm loss"].item() for d in loss_dicts])
        norms.append(norm)
        dropped.append(sum(m.stats.dropped for m in model.modules() if hasattr(m, "stats")))
    set_aux_loss_grad_scale(1.0)
    return {"losses": losses, "norms": norms, "dropped": dropped}


def reference(layout: EPLayout) -> dict:
    """The single-process model over the same global batches (all micro-batches)."""
    torch.manual_seed(SEED)
    whole = EPLayout(num_microbatches=layout.num_microbatches * layout.dp,
                     micro_batch_size=layout.micro_batch_size,
                     capacity_factor=layout.capacity_factor, llama=layout.llama)
    model = GPTModel(model_config(whole))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    out = train(model, whole, 0)
    out.update(initial=initial, specs=checkpoint_layout.param_specs(model),
               final=model.state_dict())
    return out


def global_expert_names(state: dict, layout: EPLayout, ep_rank: int) -> dict:
    """A rank's state dict with expert ids made global (``experts.i`` -> ``experts.(r*E_l+i)``)."""
    return to_global_expert_ids(state, ep_rank, EXPERTS // layout.ep)


def run_layout(layout: EPLayout) -> dict:
    parallel_state.initialize_model_parallel(layout.tp, layout.pp,
                                             expert_model_parallel_size=layout.ep)
    try:
        set_seeds(SEED)
        model = GPTModel(model_config(layout),
                         pre_process=parallel_state.is_pipeline_first_stage(),
                         post_process=parallel_state.is_pipeline_last_stage())
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        dp_rank = parallel_state.get_data_parallel_rank()
        out = train(model, layout, dp_rank)
        out.update(tp=parallel_state.get_tensor_model_parallel_rank(),
                   pp=parallel_state.get_pipeline_model_parallel_rank(), dp=dp_rank,
                   ep=parallel_state.get_expert_model_parallel_rank(), rank=dist.get_rank(),
                   initial=initial, state={k: v.clone() for k, v in model.state_dict().items()})
        return out
    finally:
        parallel_state.destroy_model_parallel()


def layouts_worker(rank: int, world_size: int, layouts: list[EPLayout]) -> list:
    return [run_layout(layout) for layout in layouts]
