"""Where tensors live: the accelerator the model runs on, and the device a process group's
collectives take. The one home of both rules; everything that builds a tensor for a
collective asks :func:`collective_device`.

NCCL only takes CUDA tensors (a CPU tensor fails with "No backend type associated with
device type cpu"), gloo here only ever sees CPU tensors: ``--distributed-backend gloo`` on
a machine with CUDA is refused when the flags are validated (and ``nccl`` on one without),
so the model, the pipeline buffers and every collective agree on one device.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

# Backends whose collectives run on the accelerator (the rest take CPU tensors).
ACCELERATOR_BACKENDS = ("nccl",)


def accelerator_device() -> torch.device:
    """The device the model runs on: the current CUDA device when there is one, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def collective_device(group=None) -> torch.device:
    """The device every tensor handed to a collective over ``group`` must live on.

    Args:
        group: a process group (None: the default group).

    Returns:
        The accelerator for an NCCL group, else the CPU; without torch.distributed (no
        collective runs) the accelerator, where the values reduced into it already are.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return accelerator_device()
    if dist.get_backend(group) in ACCELERATOR_BACKENDS:
        return accelerator_device()
    return torch.device("cpu")


def backend_problem(backend: str | None, cuda_available: bool) -> str | None:
    """Why ``--distributed-backend`` cannot be used on this machine, or None.

    The model goes to the GPU whenever CUDA is present, so a gloo group would be handed
    CUDA activations by the pipeline and CPU tensors by everything else.
    """
    if backend == "gloo" and cuda_available:
        return ("--distributed-backend gloo on a machine with CUDA: the model runs on the GPU "
                "and needs nccl (the default there); to train on the CPU with gloo, hide the "
                "GPUs (CUDA_VISIBLE_DEVICES=)")
    if backend == "nccl" and not cuda_available:
        return ("--distributed-backend nccl on a machine without CUDA: NCCL runs only on "
                "GPUs; on the CPU use gloo (the default there)")
    return None
