"""Train a tiny GPTModel for a few steps under a (TP, PP, DP) layout, or in one process.

Both sides drive the same parts directly (no pretrain()): GPTModel, the schedule from
``get_forward_backward_func``, ``finalize_model_grads`` and ``get_megatron_optimizer``.
The partitioned model is loaded with the single-process model's initial weights (split
with ``checkpoint_layout``), so any difference afterwards comes from the parallel code.
Dropout is off: dropout masks legitimately differ between layouts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed import checkpoint_layout
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
from megatron.core.tensor_parallel.random import model_parallel_seed
from megatron.model.config import TransformerConfig
from megatron.model.gpt_model import GPTModel
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer

SEED, STEPS, SEQ, VOCAB, LAYERS = 1234, 3, 16, 64, 4


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    num_microbatches: int = 2
    micro_batch_size: int = 2
    sequence_parallel: bool = False
    distributed_optimizer: bool = False

    @property
    def name(self) -> str:
        extra = ("+SP" if self.sequence_parallel else "") + \
            ("+distopt" if self.distributed_optimizer else "")
        return f"TP{self.tp}xPP{self.pp}xDP{self.dp}/{self.num_microbatches}mb{extra}"


def model_config(layout: Layout) -> TransformerConfig:
    return TransformerConfig(num_layers=LAYERS, hidden_size=32, num_attention_heads=4,
                             padded_vocab_size=VOCAB, max_position_embeddings=SEQ,
                             hidden_dropout=0.0, attention_dropout=0.0,
                             use_cpu_initialization=True,
                             sequence_parallel=layout.sequence_parallel)


def optimizer_config(layout: Layout) -> OptimizerConfig:
    # lr large enough that the weights move well past the tolerance in 3 steps;
    # clip_grad low enough that clipping is active (tests the global grad norm).
    # A large eps: with 1e-8 Adam turns a near-zero gradient into a +-lr step whose sign
    # is decided by rounding noise, which would make exact comparison meaningless.
    return OptimizerConfig(lr=3e-3, weight_decay=0.01, adam_beta2=0.95, adam_eps=1e-3,
                           clip_grad=0.5,
                           use_distributed_optimizer=layout.distributed_optimizer)


def global_batch(step: int, layout: Layout) -> torch.Tensor:
    """Token ids [global batch, s + 1] of one step, identical for every layout."""
    rows = layout.micro_batch_size * layout.num_microbatches * layout.dp
    g = torch.Generator().manual_seed(SEED + step)
    return torch.randint(0, VOCAB, (rows, SEQ + 1), generator=g)


def microbatches(tokens: torch.Tensor, mbs: int) -> list[dict]:
    out = []
    for start in range(0, tokens.shape[0], mbs):
        chunk = tokens[start:start + mbs]
        out.append({"tokens": chunk[:, :-1], "labels": chunk[:, 1:],
                    "position_ids": torch.arange(SEQ).expand(chunk.shape[0], SEQ)})
    return out


def forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])

    def loss_func(output_tensor):
        loss = output_tensor.float().mean()
        return loss, {"lm loss": loss.detach().clone()}
    return output, loss_func


def train(model, layout: Layout, dp_rank: int) -> tuple[list[list[float]], list[float]]:
    """STEPS training steps; returns (per-micro-batch losses per step, grad norms)."""
    optimizer = get_megatron_optimizer([model], optimizer_config(layout))
    schedule = get_forward_backward_func()
    losses, norms = [], []
    per_rank = layout.micro_batch_size * layout.num_microbatches
    for step in range(STEPS):
        tokens = global_batch(step, layout)[dp_rank * per_rank:(dp_rank + 1) * per_rank]
        optimizer.zero_grad()
        loss_dicts = schedule(forward_step_func=forward_step,
                              data_iterator=iter(microbatches(tokens, layout.micro_batch_size)),
                              model=[model], num_microbatches=layout.num_microbatches,
                              seq_length=SEQ, micro_batch_size=layout.micro_batch_size)
        finalize_model_grads([model])
        ok, norm, _ = optimizer.step()
        if not ok:
            raise RuntimeError(f"{layout.name}: optimizer step {step} was skipped")
        losses.append([d["lm loss"].item() for d in loss_dicts])
        norms.append(norm)
    return losses, norms


def reference(layout: Layout) -> dict:
    """The single-process run (no torch.distributed) over the same global batches."""
    torch.manual_seed(SEED)
    model = GPTModel(model_config(layout))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    whole = Layout(num_microbatches=layout.num_microbatches * layout.dp,
                   micro_batch_size=layout.micro_batch_size)
    losses, norms = train(model, whole, 0)
    return {"initial": initial, "specs": checkpoint_layout.param_specs(model),
            "losses": losses, "norms": norms, "final": model.state_dict()}


def run_layout(layout: Layout, initial: dict, specs: dict) -> dict:
    """On one rank: build this rank's part of the model from ``initial`` and train it."""
    parallel_state.initialize_model_parallel(layout.tp, layout.pp)
    try:
        model_parallel_seed(SEED)
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        model = GPTModel(model_config(layout),
                         pre_process=parallel_state.is_pipeline_first_stage(),
                         post_process=parallel_state.is_pipeline_last_stage())
        parts = checkpoint_layout.split_state_dict(initial, specs, layout.tp, layout.pp,
                                                   LAYERS, tied_embeddings=True)
        model.load_state_dict(parts[(tp_rank, pp_rank)], strict=True)
        dp_rank = parallel_state.get_data_parallel_rank()
        losses, norms = train(model, layout, dp_rank)
        return {"tp": tp_rank, "pp": pp_rank, "dp": dp_rank, "rank": dist.get_rank(),
                "losses": losses, "norms": norms,
                "state": {k: v.clone() for k, v in model.state_dict().items()}}
    finally:
        parallel_state.destroy_model_parallel()


def layouts_worker(rank: int, world_size: int, cases: list[tuple[Layout, dict, dict]]) -> list:
    """Run every (layout, initial weights, specs) case in turn on this rank."""
    return [run_layout(layout, initial, specs) for layout, initial, specs in cases]
