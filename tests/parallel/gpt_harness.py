"""Train a tiny GPTModel for a few steps under a (TP, PP, DP) layout, or in one process.

Both sides drive the same parts directly (no pretrain()): GPTModel, the schedule from
``get_forward_backward_func``, ``finalize_model_grads`` and ``get_megatron_optimizer``.
Each rank builds its part of the model itself, seeded as training seeds it
(``set_seeds``: torch seed + 100 x pipeline rank) with ``use_cpu_initialization``, and
reports its initial weights, which must equal the single-process model's: the layout
changes nothing about the starting point. Dropout is off: dropout masks legitimately
differ between layouts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.checkpointing import model_split as checkpoint_layout
from megatron.core.distributed import fsdp
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.schedules import get_forward_backward_func
from megatron.initialize import set_seeds
from megatron.model.config import TransformerConfig
from megatron.model.gpt_model import GPTModel
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.optimizer.state_stats import adam_state_norms

SEED, STEPS, SEQ, VOCAB, LAYERS = 1234, 3, 16, 64, 4
# A Llama-shaped model: RMSNorm, 4 heads in 2 query groups (one per rank at TP2), SwiGLU,
# no biases, rotary with a large base and Llama-3 scaling, untied output layer.
LLAMA_SHAPE = dict(normalization="RMSNorm", num_query_groups=2, swiglu=True,
                   add_bias_linear=False, position_embedding_type="rope", rotary_base=500000.0,
                   rope_scaling=True, rope_scaling_factor=8.0,
                   untie_embeddings_and_output_weights=True)


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    num_microbatches: int = 2
    micro_batch_size: int = 2
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    vp: int | None = None   # model chunks per stage (interleaved 1F1B)
    llama: bool = False     # LLAMA_SHAPE instead of the GPT-2-shaped model
    fsdp: int | None = None  # FSDP2 (core.distributed.fsdp) as ZeRO stage 2 or 3

    @property
    def name(self) -> str:
        extra = ("+SP" if self.sequence_parallel else "") + \
            ("+distopt" if self.distributed_optimizer else "") + \
            (f"xV{self.vp}" if self.vp else "") + ("+llama" if self.llama else "") + \
            (f"+fsdp{self.fsdp}" if self.fsdp else "")
        return f"TP{self.tp}xPP{self.pp}xDP{self.dp}/{self.num_microbatches}mb{extra}"


def model_config(layout: Layout) -> TransformerConfig:
    return TransformerConfig(num_layers=LAYERS, hidden_size=32, num_attention_heads=4,
                             padded_vocab_size=VOCAB, max_position_embeddings=SEQ,
                             hidden_dropout=0.0, attention_dropout=0.0,
                             use_cpu_initialization=True,
                             sequence_parallel=layout.sequence_parallel,
                             **(LLAMA_SHAPE if layout.llama else {}))


def optimizer_config(layout: Layout) -> OptimizerConfig:
    # lr large enough that the weights move well past the tolerance in 3 steps;
    # clip_grad low enough that clipping is active (tests the global grad norm).
    # A large eps: with 1e-8 Adam turns a near-zero gradient into a +-lr step whose sign
    # is decided by rounding noise, which would make exact comparison meaningless.
    return OptimizerConfig(lr=3e-3, weight_decay=0.01, adam_beta2=0.95, adam_eps=1e-3,
                           clip_grad=0.5,
                           use_distributed_optimizer=layout.distributed_optimizer,
                           use_torch_fsdp2=bool(layout.fsdp))


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


def train(chunks: list, layout: Layout, dp_rank: int) -> tuple[list[list[float]], list[float],
                                                                dict[str, float]]:
    """STEPS training steps; returns (per-micro-batch losses per step, grad norms, the norms
    of the Adam states after the last step)."""
    optimizer = get_megatron_optimizer(chunks, optimizer_config(layout))
    schedule = get_forward_backward_func()
    losses, norms = [], []
    per_rank = layout.micro_batch_size * layout.num_microbatches
    for step in range(STEPS):
        tokens = global_batch(step, layout)[dp_rank * per_rank:(dp_rank + 1) * per_rank]
        optimizer.zero_grad()
        # one iterator per chunk (each yields the step's micro-batches), as Megatron does
        feeds = [iter(microbatches(tokens, layout.micro_batch_size)) for _ in chunks]
        loss_dicts = schedule(forward_step_func=forward_step,
                              data_iterator=feeds if layout.vp else feeds[0],
                              model=chunks, num_microbatches=layout.num_microbatches,
                              seq_length=SEQ, micro_batch_size=layout.micro_batch_size,
                              **({"no_sync_func": fsdp.no_sync(chunks)} if layout.fsdp else {}))
        finalize_model_grads(chunks)
        ok, norm, _ = optimizer.step()
        if not ok:
            raise RuntimeError(f"{layout.name}: optimizer step {step} was skipped")
        losses.append([d["lm loss"].item() for d in loss_dicts])
        norms.append(norm)
    return losses, norms, adam_state_norms(optimizer)


def reference(layout: Layout) -> dict:
    """The single-process run (no torch.distributed) over the same global batches."""
    torch.manual_seed(SEED)
    model = GPTModel(model_config(layout))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    whole = Layout(num_microbatches=layout.num_microbatches * layout.dp,
                   micro_batch_size=layout.micro_batch_size)
    losses, norms, adam = train([model], whole, 0)
    return {"initial": initial, "specs": checkpoint_layout.param_specs(model),
            "losses": losses, "norms": norms, "adam": adam, "final": model.state_dict()}


def _build_chunks(layout: Layout) -> list[GPTModel]:
    """This rank's model chunk(s), built as ``megatron.training.build_model`` builds them."""
    if layout.vp is None:
        return [GPTModel(model_config(layout), pre_process=parallel_state.is_pipeline_first_stage(),
                         post_process=parallel_state.is_pipeline_last_stage())]
    chunks = []
    for i in range(layout.vp):
        parallel_state.set_virtual_pipeline_model_parallel_rank(i)
        chunks.append(GPTModel(model_config(layout),
                               pre_process=parallel_state.is_pipeline_first_stage(),
                               post_process=parallel_state.is_pipeline_last_stage()))
    parallel_state.set_virtual_pipeline_model_parallel_rank(0)
    return chunks


def stage_states(result: dict, layout: Layout, key: str) -> dict:
    """``{(tp, virtual stage): state dict}`` of one rank's chunks (virtual stage
    ``c * PP + pp``), so interleaved layouts merge like a ``PP x V``-stage pipeline."""
    return {(result["tp"], c * layout.pp + result["pp"]): sd
            for c, sd in enumerate(result[key])}


def run_layout(layout: Layout) -> dict:
    """On one rank: build this rank's part of the model, seeded as training does, and
    train it; returns its initial and final weights, losses and grad norms."""
    parallel_state.initialize_model_parallel(layout.tp, layout.pp, layout.vp)
    try:
        set_seeds(SEED)
        chunks = _build_chunks(layout)
        initial = [{k: v.clone() for k, v in c.state_dict().items()} for c in chunks]
        if layout.fsdp:
            config = fsdp.FSDPConfig(reshard_after_forward=layout.fsdp == 3)
            chunks = [fsdp.fully_shard_chunk(c, c.transformer.layers, config) for c in chunks]
        dp_rank = parallel_state.get_data_parallel_rank()
        losses, norms, adam = train(chunks, layout, dp_rank)
        return {"tp": parallel_state.get_tensor_model_parallel_rank(),
                "pp": parallel_state.get_pipeline_model_parallel_rank(), "dp": dp_rank,
                "rank": dist.get_rank(), "losses": losses, "norms": norms, "adam": adam, "initial": initial,
                "state": [fsdp.full_model_state(c) for c in chunks]}
    finally:
        parallel_state.destroy_model_parallel()


def layouts_worker(rank: int, world_size: int, layouts: list[Layout]) -> list:
    """Run every layout in turn on this rank."""
    return [run_layout(layout) for layout in layouts]

