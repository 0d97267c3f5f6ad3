"""1F1B schedule, p2p exchange and gradient finalisation on a toy model (no GPTModel).

On 2 gloo ranks (in the session's shared spawn, tests/conftest.py) these checks run, each
against a single-process reference computed in the parent with the same seed:
* PP2 with 4 micro-batches under 1F1B: per-micro-batch losses and every gradient;
* DP2: the bucketed data-parallel all-reduce gives the full-batch gradient;
* PP2: the tied-embedding all-reduce sums the copies of the first and last stage;
* interleaved 1F1B (2 chunks per stage) with 4, 2 and 6 micro-batches, training and
  forward-only.
Interleaving over 4 stages (``check_interleaved(4, ...)``) runs in the 4-rank spawn of
test_gpt_layouts.py.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from megatron.core import parallel_state
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel.pipelined_schedules import (
    forward_backward_pipelining_without_interleaving)

HIDDEN, SEQ, MBS, NUM_MB, LAYERS = 8, 5, 3, 4, 4


class ToyStage(nn.Module):
    """A stack of tanh(Linear) layers; the first stage reads data, the last one scores."""

    def __init__(self, layers: list[nn.Module], pre_process: bool, post_process: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.pre_process, self.post_process = pre_process, post_process
        self.config = SimpleNamespace(hidden_size=HIDDEN, params_dtype=torch.float32)
        self.input_tensor = None

    def set_input_tensor(self, tensor):
        self.input_tensor = tensor

    def forward(self, x, y):  # x, y: [s, b, h]
        h = x if self.pre_process else self.input_tensor
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return ((h - y) ** 2).mean(-1) if self.post_process else h


def _full_model(num_layers: int = LAYERS) -> list[nn.Module]:
    torch.manual_seed(1234)
    return [nn.Linear(HIDDEN, HIDDEN) for _ in range(num_layers)]


def _microbatches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(99)
    return [(torch.randn(SEQ, MBS, HIDDEN, generator=g), torch.randn(SEQ, MBS, HIDDEN, generator=g))
            for _ in range(NUM_MB)]


def _forward_step(data_iterator, model):
    x, y = next(data_iterator)
    out = model(x, y)

    def loss_func(output):
        loss = output.mean()
        return loss, {"lm loss": loss.detach()}
    return out, loss_func


def _reference():
    layers = _full_model()
    model = ToyStage(layers, True, True)
    losses = []
    for x, y in _microbatches():
        loss = model(x, y).mean()
        (loss / NUM_MB).backward()
        losses.append(loss.item())
    return losses, [[p.grad.clone() for p in layer.parameters()] for layer in layers]


def _check_pipeline(rank: int) -> dict:
    parallel_state.initialize_model_parallel(1, 2)
    layers = _full_model()
    stage = parallel_state.get_pipeline_model_parallel_rank()
    mine = layers[stage * LAYERS // 2:(stage + 1) * LAYERS // 2]
    model = ToyStage(mine, stage == 0, stage == 1)
    losses = forward_backward_pipelining_without_interleaving(
        forward_step_func=_forward_step, data_iterator=iter(_microbatches()), model=[model],
        num_microbatches=NUM_MB, seq_length=SEQ, micro_batch_size=MBS)
    grads = [[p.grad.clone() for p in layer.parameters()] for layer in mine]
    parallel_state.destroy_model_parallel()
    return {"stage": stage, "losses": [d["lm loss"].item() for d in losses], "grads": grads}


def _check_data_parallel(rank: int) -> list[torch.Tensor]:
    parallel_state.initialize_model_parallel(1, 1)
    model = ToyStage(_full_model(), True, True)
    mbs = _microbatches()[rank * 2:(rank + 1) * 2]  # each DP rank: half the micro-batches
    for x, y in mbs:
        (model(x, y).mean() / 2).backward()
    finalize_model_grads([model], bucket_size_mb=0.0005)  # tiny buckets: several collectives
    parallel_state.destroy_model_parallel()
    return [p.grad.clone() for p in model.parameters()]


def _check_embedding(rank: int) -> torch.Tensor:
    parallel_state.initialize_model_parallel(1, 2)
    model = ToyStage(_full_model(), True, True)
    weight = model.layers[0].weight
    weight.shared_embedding = True
    weight.grad = torch.full_like(weight, float(rank + 1))
    model.layers[1].weight.grad = torch.full_like(weight, float(rank + 1))  # not shared
    finalize_model_grads([model])
    parallel_state.destroy_model_parallel()
    return torch.stack([weight.grad, model.layers[1].weight.grad])


TWO_STAGE_INTERLEAVED = [4, 2, 6]


def two_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 2-rank spawn (tests/conftest.py)."""
    return {"pipeline": (worker,)}


def worker(rank: int, world_size: int) -> dict:
    return {"pipeline": _check_pipeline(rank), "dp": _check_data_parallel(rank),
            "embedding": _check_embedding(rank),
            "interleaved": interleaved_worker(rank, world_size, TWO_STAGE_INTERLEAVED)}


def test_1f1b_data_parallel_and_embedding_grads_match_single_process(two_rank_spawn):
    results = two_rank_spawn["pipeline"]  # the worker above, in the shared spawn
    ref_losses, ref_grads = _reference()

    # 1F1B: the last stage reports every micro-batch's loss; each stage owns half the grads.
    assert results[0]["pipeline"]["losses"] == []
    torch.testing.assert_close(torch.tensor(results[1]["pipeline"]["losses"]),
                               torch.tensor(ref_losses), rtol=1e-5, atol=1e-6)
    for stage, result in enumerate(results):
        expected = ref_grads[stage * LAYERS // 2:(stage + 1) * LAYERS // 2]
        for got_layer, ref_layer in zip(result["pipeline"]["grads"], expected):
            for got, ref in zip(got_layer, ref_layer):
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

    # DP2: both ranks end with the full-batch mean gradient.
    flat_ref = [g for layer in ref_grads for g in layer]
    for result in results:
        for got, ref in zip(result["dp"], flat_ref):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

    # Embedding: the shared copy holds 1 + 2 on both stages, the other weight is untouched.
    for rank, result in enumerate(results):
        assert torch.all(result["embedding"][0] == 3.0)
        assert torch.all(result["embedding"][1] == rank + 1)

    check_interleaved(2, TWO_STAGE_INTERLEAVED, [r["interleaved"] for r in results])


def _interleaved_run(stages: int, num_microbatches: int) -> dict:
    from megatron.core.pipeline_parallel.pipelined_schedules import (
        forward_backward_pipelining_with_interleaving)
    parallel_state.initialize_model_parallel(1, stages, virtual_pipeline_model_parallel_size=2)
    layers = _full_model(2 * stages)
    stage = parallel_state.get_pipeline_model_parallel_rank()
    # chunk c of stage p is virtual stage c * P + p and holds layer c * P + p
    chunks = [ToyStage([layers[c * stages + stage]], c == 0 and stage == 0,
                       c == 1 and stage == stages - 1) for c in range(2)]
    batches = _batches(num_microbatches)
    common = dict(forward_step_func=_forward_step, model=chunks, num_microbatches=num_microbatches,
                  seq_length=SEQ, micro_batch_size=MBS)
    eval_losses = forward_backward_pipelining_with_interleaving(
        data_iterator=[iter(batches), iter(batches)], forward_only=True, **common)
    losses = forward_backward_pipelining_with_interleaving(
        data_iterator=[iter(batches), iter(batches)], **common)
    grads = {c * stages + stage: [p.grad.clone() for p in chunk.parameters()]
             for c, chunk in enumerate(chunks)}
    parallel_state.destroy_model_parallel()
    return {"losses": [d["lm loss"].item() for d in losses],
            "eval": [d["lm loss"].item() for d in eval_losses], "grads": grads}


def interleaved_worker(rank: int, world_size: int,
                       microbatch_counts: list[int]) -> list[dict]:
    return [_interleaved_run(world_size, m) for m in microbatch_counts]


def _batches(num_microbatches: int) -> list:
    return (_microbatches() * 4)[:num_microbatches]


def _reference_for(num_layers: int, num_microbatches: int):
    layers = _full_model(num_layers)
    model = ToyStage(layers, True, True)
    losses = []
    for x, y in _batches(num_microbatches):
        loss = model(x, y).mean()
        (loss / num_microbatches).backward()
        losses.append(loss.item())
    return losses, [[p.grad.clone() for p in layer.parameters()] for layer in layers]


def check_interleaved(stages: int, microbatch_counts: list[int], per_rank: list) -> None:
    """M > P (steady state), M == P (all warmup); P = 2 (next == prev) and P = 4 (wrap)."""
    for i, num_microbatches in enumerate(microbatch_counts):
        results = [r[i] for r in per_rank]
        ref_losses, ref_grads = _reference_for(2 * stages, num_microbatches)
        assert all(r["losses"] == [] and r["eval"] == [] for r in results[:-1])
        for key in ("losses", "eval"):
            torch.testing.assert_close(torch.tensor(results[-1][key]), torch.tensor(ref_losses),
                                       rtol=1e-5, atol=1e-6)
        for result in results:
            for layer_id, grads in result["grads"].items():
                for got, ref in zip(grads, ref_grads[layer_id]):
                    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

