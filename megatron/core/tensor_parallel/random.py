"""Random number state for tensor parallelism, and activation checkpointing.

Megatron's rule: the default generator holds the same seed on every tensor-parallel rank
(so dropout outside tensor-parallel regions, on replicated activations, matches across
ranks), while a tracked state named ``model-parallel-rng`` is seeded with
``seed + 2718 + tp_rank`` and is forked into for dropout *inside* tensor-parallel regions
(attention probabilities, whose heads differ per rank) and for per-partition weight init.

A tracked state holds the CPU generator state and, when CUDA is available, the current
device's CUDA generator state, so the same code works on CPU and GPU.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.distributed as dist

from megatron.core import parallel_state

_MODEL_PARALLEL_RNG_TRACKER_NAME = "model-parallel-rng"


def _get_state() -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return torch.random.get_rng_state(), cuda


def _set_state(state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    cpu, cuda = state
    torch.random.set_rng_state(cpu)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


class RNGStatesTracker:
    """Named RNG states that code can fork into and out of (``with tracker.fork():``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every tracked state and seed."""
        self.states_: dict[str, tuple] = {}
        self.seeds_: set[int] = set()

    def is_initialized(self, name: str = _MODEL_PARALLEL_RNG_TRACKER_NAME) -> bool:
        return name in self.states_

    def get_states(self) -> dict[str, tuple]:
        """A copy of every tracked state (for checkpoints and activation recompute)."""
        return dict(self.states_)

    def set_states(self, states: dict[str, tuple]) -> None:
        """Replace the tracked states (the seeds are left as they are)."""
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        """Track a new state seeded with ``seed``; the current default state is untouched."""
        if seed in self.seeds_:
            raise ValueError(f"RNG seed {seed} already exists in the tracker")
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} already exists in the tracker")
        self.seeds_.add(seed)
        saved = _get_state()
        torch.random.manual_seed(seed)  # seeds the CPU and every CUDA generator
        self.states_[name] = _get_state()
        _set_state(saved)

    @contextlib.contextmanager
    def fork(self, name: str = _MODEL_PARALLEL_RNG_TRACKER_NAME):
        """Run the body with the tracked state ``name``, then restore the default one."""
        if name not in self.states_:
            raise RuntimeError(f"RNG state {name!r} is not tracked; call "
                               "megatron.core.tensor_parallel.model_parallel_seed(seed) first")
        saved = _get_state()
        _set_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = _get_state()
            _set_state(saved)

    def state_dict(self) -> dict[str, Any]:
        return {"states": self.get_states(), "seeds": sorted(self.seeds_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.states_ = dict(state["states"])
        self.seeds_ = set(state["seeds"])


_RNG_TRACKER = RNGStatesTracker()


def get_rng_tracker() -> RNGStatesTracker:
    """The process-wide tracker."""
    return _RNG_TRACKER


get_cuda_rng_tracker = get_rng_tracker  # Megatron's name


def model_parallel_seed(seed: int) -> None:
    """Seed the default generator with ``seed`` and the tracker with ``seed + 2718 + tp_rank``.

    The caller adds any per-pipeline-stage offset (Megatron uses ``seed + 100 * pp_rank``)
    before calling, so every tensor-parallel rank of one stage shares the default seed.
    """
    torch.random.manual_seed(seed)
    _RNG_TRACKER.reset()
    tp_seed = seed + 2718 + parallel_state.get_tensor_model_parallel_rank()
    _RNG_TRACKER.add(_MODEL_PARALLEL_RNG_TRACKER_NAME, tp_seed)


model_parallel_cuda_manual_seed = model_parallel_seed  # Megatron's name


def _split_for_rank(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """This tensor-parallel rank's share of ``x`` flattened (pads never needed: checked)."""
    size = parallel_state.get_tensor_model_parallel_world_size()
    flat = x.detach().reshape(-1)
    if size == 1 or flat.numel() % size != 0:
        return flat.clone(), x.shape
    rank = parallel_state.get_tensor_model_parallel_rank()
    return flat.chunk(size)[rank].clone(), x.shape


def _gather_for_rank(part: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    size = parallel_state.get_tensor_model_parallel_world_size()
    if part.numel() == shape.numel():
        return part.view(shape)
    parts = [torch.empty_like(part) for _ in range(size)]
    dist.all_gather(parts, part, group=parallel_state.get_tensor_model_parallel_group())
    return torch.cat(parts).view(shape)


class CheckpointFunction(torch.autograd.Function):
    """Forward without saving activations; backward re-runs forward under the same RNG."""

    @staticmethod
    def forward(ctx, run_function, distribute_saved_activations, *args):
        ctx.run_function = run_function
        ctx.distribute = distribute_saved_activations
        ctx.rng = (_get_state(), _RNG_TRACKER.get_states())
        with torch.no_grad():
            outputs = run_function(*args)
        tensors = list(args)
        if distribute_saved_activations and torch.is_tensor(args[0]):
            # Each TP rank keeps 1/tp of the (replicated) first input; gathered on recompute.
            ctx.first_shape_grad = args[0].requires_grad
            tensors[0], ctx.first_shape = _split_for_rank(args[0])
        ctx.tensor_pos = [i for i, a in enumerate(tensors) if torch.is_tensor(a)]
        ctx.others = [None if torch.is_tensor(a) else a for a in tensors]
        ctx.save_for_backward(*[tensors[i] for i in ctx.tensor_pos])
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        inputs = list(ctx.others)
        for i, t in zip(ctx.tensor_pos, ctx.saved_tensors):
            inputs[i] = t
        if ctx.distribute and torch.is_tensor(inputs[0]):
            inputs[0] = _gather_for_rank(inputs[0], ctx.first_shape)
            inputs[0].requires_grad_(ctx.first_shape_grad)
        inputs = [x.detach().requires_grad_(x.requires_grad) if torch.is_tensor(x) else x
                  for x in inputs]
        saved_now = (_get_state(), _RNG_TRACKER.get_states())
        _set_state(ctx.rng[0])
        _RNG_TRACKER.set_states(ctx.rng[1])
        try:
            with torch.enable_grad():
                outputs = ctx.run_function(*inputs)
        finally:
            _set_state(saved_now[0])
            _RNG_TRACKER.set_states(saved_now[1])
        if torch.is_tensor(outputs):
            outputs = (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads)
                 if torch.is_tensor(o) and o.requires_grad and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        input_grads = tuple(x.grad if torch.is_tensor(x) else None for x in inputs)
        return (None, None) + input_grads


def checkpoint(function: Callable, distribute_saved_activations: bool, *args: Any) -> Any:
    """Activation checkpointing that replays the default and tracked RNG states.

    Args:
        function: the computation to recompute in backward.
        distribute_saved_activations: split the saved first input across the
            tensor-parallel ranks (it is replicated there) to save memory.
        *args: inputs of ``function``; tensors and plain values.
    """
    return CheckpointFunction.apply(function, distribute_saved_activations, *args)
