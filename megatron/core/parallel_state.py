"""Tensor, pipeline and data parallel process groups (Megatron's rank layout).

A world of ``N = TP * DP * PP`` ranks is laid out with the tensor-parallel index varying
fastest, then the data-parallel index, then the pipeline stage::

    rank = pp_rank * (TP * DP) + dp_rank * TP + tp_rank

so the ranks of one tensor-parallel group are neighbours (one node, fast links) and a
pipeline group strides across the world.

When ``torch.distributed`` is not initialised every size query returns 1 and every rank
query 0, so single-process code and unit tests need no process group at all.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch.distributed as dist

_TENSOR_MODEL_PARALLEL_GROUP = None
_PIPELINE_MODEL_PARALLEL_GROUP = None
_DATA_PARALLEL_GROUP = None
_MODEL_PARALLEL_GROUP = None
_EMBEDDING_GROUP = None
# Global ranks of this rank's groups, for send/recv targets and broadcast sources.
_PIPELINE_GLOBAL_RANKS: list[int] | None = None
_DATA_PARALLEL_GLOBAL_RANKS: list[int] | None = None
_TENSOR_GLOBAL_RANKS: list[int] | None = None
_EMBEDDING_GLOBAL_RANKS: list[int] | None = None
_VIRTUAL_PIPELINE_WORLD_SIZE: int | None = None
_VIRTUAL_PIPELINE_RANK: int | None = None
_LAYOUT: "ParallelLayout | None" = None
# Expert parallelism (MoE): experts split over consecutive data-parallel ranks.
_EXPERT_MODEL_PARALLEL_GROUP = None
_EXPERT_DATA_PARALLEL_GROUP = None


@dataclass
class ParallelLayout:
    """A validated split of the world into tensor, data and pipeline parallel parts."""

    world_size: int
    tensor_model_parallel_size: int
    pipeline_model_parallel_size: int
    data_parallel_size: int
    expert_model_parallel_size: int = 1


def parallel_layout_problems(world_size: int, tensor_model_parallel_size: int,
                             pipeline_model_parallel_size: int,
                             num_layers: int | None = None,
                             num_attention_heads: int | None = None,
                             global_batch_size: int | None = None,
                             micro_batch_size: int | None = None,
                             expert_model_parallel_size: int = 1) -> tuple[list[str], int | None]:
    """Every inconsistency of a parallel layout, naming the flags; pure function.

    Returns:
        ``(problems, data_parallel_size)``; the size is None when the world does not divide.
    """
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    problems: list[str] = []
    for name, value in (("world size", world_size),
                        ("--tensor-model-parallel-size", tp),
                        ("--pipeline-model-parallel-size", pp)):
        if not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if problems:
        return problems, None
    dp = None
    if world_size % (tp * pp) != 0:
        problems.append(
            f"world size {world_size} is not divisible by --tensor-model-parallel-size {tp} "
            f"x --pipeline-model-parallel-size {pp} = {tp * pp}")
    else:
        dp = world_size // (tp * pp)
    if num_layers is not None and num_layers % pp != 0:
        problems.append(f"--num-layers {num_layers} is not divisible by "
                        f"--pipeline-model-parallel-size {pp}")
    if num_attention_heads is not None and num_attention_heads % tp != 0:
        problems.append(f"--num-attention-heads {num_attention_heads} is not divisible by "
                        f"--tensor-model-parallel-size {tp}")
    if global_batch_size is not None and micro_batch_size is not None and dp is not None:
        if micro_batch_size < 1 or global_batch_size % (micro_batch_size * dp) != 0:
            problems.append(
                f"--global-batch-size {global_batch_size} is not divisible by "
                f"--micro-batch-size {micro_batch_size} x data-parallel size {dp} "
                f"= {micro_batch_size * dp}")
    problems += _expert_layout_problems(expert_model_parallel_size, dp)
    return problems, dp


def _expert_layout_problems(ep: int, dp: int | None) -> list[str]:
    """Expert-parallel ranks are carved from the data-parallel ranks: EP must divide DP."""
    if not isinstance(ep, int) or ep < 1:
        return [f"--expert-model-parallel-size must be a positive integer, got {ep!r}"]
    if dp is not None and dp % ep != 0:
        return [f"--expert-model-parallel-size {ep} does not divide the data-parallel "
                f"size {dp} (expert-parallel ranks are data-parallel ranks)"]
    return []


def validate_parallel_layout(world_size: int, tensor_model_parallel_size: int,
                             pipeline_model_parallel_size: int,
                             num_layers: int | None = None,
                             num_attention_heads: int | None = None,
                             global_batch_size: int | None = None,
                             micro_batch_size: int | None = None,
                             expert_model_parallel_size: int = 1) -> ParallelLayout:
    """Check that a parallel layout fits the world and the model; pure function.

    Every problem found is reported at once, naming the flags involved.

    Raises:
        ValueError: listing every inconsistency.
    """
    problems, dp = parallel_layout_problems(
        world_size, tensor_model_parallel_size, pipeline_model_parallel_size, num_layers,
        num_attention_heads, global_batch_size, micro_batch_size, expert_model_parallel_size)
    if problems:
        raise ValueError("invalid parallel layout:\n  " + "\n  ".join(problems))
    return ParallelLayout(world_size, tensor_model_parallel_size, pipeline_model_parallel_size,
                          dp, expert_model_parallel_size)


def _as_timedelta(timeout) -> datetime.timedelta | None:
    if timeout is None or isinstance(timeout, datetime.timedelta):
        return timeout
    return datetime.timedelta(seconds=float(timeout))


def _new_group(ranks: list[int], timeout):
    """Create a group on the default backend (gloo on CPU, nccl on GPU)."""
    kwargs = {"backend": dist.get_backend()}
    if timeout is not None:
        kwargs["timeout"] = timeout
    return dist.new_group(ranks=ranks, **kwargs)


def _create_groups(rank: int, layout: ParallelLayout, timeout) -> None:
    """Every rank creates every group in the same order; each keeps the ones it is in."""
    global _TENSOR_MODEL_PARALLEL_GROUP, _PIPELINE_MODEL_PARALLEL_GROUP, _DATA_PARALLEL_GROUP
    global _MODEL_PARALLEL_GROUP, _EMBEDDING_GROUP, _PIPELINE_GLOBAL_RANKS
    global _DATA_PARALLEL_GLOBAL_RANKS, _TENSOR_GLOBAL_RANKS, _EMBEDDING_GLOBAL_RANKS
    world_size = layout.world_size
    tp, pp = layout.tensor_model_parallel_size, layout.pipeline_model_parallel_size
    dp = layout.data_parallel_size
    stage = tp * dp  # ranks per pipeline stage

    for i in range(world_size // tp):
        ranks = list(range(i * tp, (i + 1) * tp))
        group = _new_group(ranks, timeout)
        if rank in ranks:
            _TENSOR_MODEL_PARALLEL_GROUP, _TENSOR_GLOBAL_RANKS = group, ranks
    for p in range(pp):
        for t in range(tp):
            ranks = [p * stage + d * tp + t for d in range(dp)]
            group = _new_group(ranks, timeout)
            if rank in ranks:
                _DATA_PARALLEL_GROUP, _DATA_PARALLEL_GLOBAL_RANKS = group, ranks
    for d in range(dp):
        ranks = [p * stage + d * tp + t for p in range(pp) for t in range(tp)]
        group = _new_group(ranks, timeout)
        if rank in ranks:
            _MODEL_PARALLEL_GROUP = group
    for i in range(stage):
        ranks = list(range(i, world_size, stage))
        group = _new_group(ranks, timeout)
        # The word embedding is shared by the first and the last stage of each pipeline.
        emb_ranks = [ranks[0], ranks[-1]] if pp > 1 else [ranks[0]]
        if rank in ranks:
            _PIPELINE_MODEL_PARALLEL_GROUP, _PIPELINE_GLOBAL_RANKS = group, ranks
            _EMBEDDING_GLOBAL_RANKS = emb_ranks
        group = _new_group(emb_ranks, timeout)
        if rank in emb_ranks:
            _EMBEDDING_GROUP = group
    _create_expert_groups(rank, layout, timeout)


def expert_group_ranks(layout: ParallelLayout) -> tuple[list[list[int]], list[list[int]]]:
    """(expert-parallel groups, expert-data-parallel groups) as lists of global ranks.

    Each data-parallel group (fixed stage and TP index, DP index ``d``) splits into runs
    of ``EP`` consecutive DP indices: ranks of one run hold different experts (the
    expert-parallel group); ranks with the same position in every run hold the same
    experts (the expert-data-parallel group), as Megatron-LM lays them out. Pure.
    """
    tp, pp, dp = (layout.tensor_model_parallel_size, layout.pipeline_model_parallel_size,
                  layout.data_parallel_size)
    ep = layout.expert_model_parallel_size
    ep_groups, edp_groups = [], []
    for p in range(pp):
        for t in range(tp):
            dp_ranks = [p * tp * dp + d * tp + t for d in range(dp)]
            ep_groups += [dp_ranks[i:i + ep] for i in range(0, dp, ep)]
            edp_groups += [dp_ranks[i::ep] for i in range(ep)]
    return ep_groups, edp_groups


def _create_expert_groups(rank: int, layout: ParallelLayout, timeout) -> None:
    global _EXPERT_MODEL_PARALLEL_GROUP, _EXPERT_DATA_PARALLEL_GROUP
    ep_groups, edp_groups = expert_group_ranks(layout)
    for ranks in ep_groups:
        group = _new_group(ranks, timeout)
        if rank in ranks:
            _EXPERT_MODEL_PARALLEL_GROUP = group
    for ranks in edp_groups:
        group = _new_group(ranks, timeout)
        if rank in ranks:
            _EXPERT_DATA_PARALLEL_GROUP = group


def initialize_model_parallel(tensor_model_parallel_size: int = 1,
                              pipeline_model_parallel_size: int = 1,
                              virtual_pipeline_model_parallel_size: int | None = None,
                              timeout=None, expert_model_parallel_size: int = 1) -> None:
    """Create every model/data parallel group for this rank.

    The layout is validated before any group is created, so every rank fails the same
    way before the first collective. All ranks create all groups in the same order, as
    ``torch.distributed.new_group`` requires.

    Args:
        tensor_model_parallel_size: ranks that split each layer.
        pipeline_model_parallel_size: pipeline stages.
        virtual_pipeline_model_parallel_size: model chunks per stage (interleaving).
        timeout: seconds or ``timedelta`` for the new groups' collectives.
        expert_model_parallel_size: data-parallel ranks each MoE layer's experts are
            split over (see ``expert_group_ranks``).
    """
    global _VIRTUAL_PIPELINE_WORLD_SIZE, _VIRTUAL_PIPELINE_RANK, _LAYOUT
    if not dist.is_initialized():
        raise RuntimeError("initialize_model_parallel needs torch.distributed to be initialised "
                           "(torch.distributed.init_process_group) first")
    world_size, rank = dist.get_world_size(), dist.get_rank()
    layout = validate_parallel_layout(world_size, tensor_model_parallel_size,
                                      pipeline_model_parallel_size,
                                      expert_model_parallel_size=expert_model_parallel_size)
    if model_parallel_is_initialized():
        raise RuntimeError("model parallel groups are already initialised; "
                           "call destroy_model_parallel() first")
    _create_groups(rank, layout, _as_timedelta(timeout))
    if virtual_pipeline_model_parallel_size is not None:
        _VIRTUAL_PIPELINE_WORLD_SIZE = virtual_pipeline_model_parallel_size
        _VIRTUAL_PIPELINE_RANK = 0
    _LAYOUT = layout


def model_parallel_is_initialized() -> bool:
    """True once initialize_model_parallel has run on this rank."""
    return _TENSOR_MODEL_PARALLEL_GROUP is not None


def destroy_model_parallel() -> None:
    """Forget every group (the groups themselves die with the default group)."""
    global _TENSOR_MODEL_PARALLEL_GROUP, _PIPELINE_MODEL_PARALLEL_GROUP, _DATA_PARALLEL_GROUP
    global _MODEL_PARALLEL_GROUP, _EMBEDDING_GROUP, _PIPELINE_GLOBAL_RANKS, _LAYOUT
    global _DATA_PARALLEL_GLOBAL_RANKS, _TENSOR_GLOBAL_RANKS, _EMBEDDING_GLOBAL_RANKS
    global _VIRTUAL_PIPELINE_WORLD_SIZE, _VIRTUAL_PIPELINE_RANK
    global _EXPERT_MODEL_PARALLEL_GROUP, _EXPERT_DATA_PARALLEL_GROUP
    _EXPERT_MODEL_PARALLEL_GROUP = _EXPERT_DATA_PARALLEL_GROUP = None
    _TENSOR_MODEL_PARALLEL_GROUP = _PIPELINE_MODEL_PARALLEL_GROUP = _DATA_PARALLEL_GROUP = None
    _MODEL_PARALLEL_GROUP = _EMBEDDING_GROUP = _LAYOUT = None
    _PIPELINE_GLOBAL_RANKS = _DATA_PARALLEL_GLOBAL_RANKS = None
    _TENSOR_GLOBAL_RANKS = _EMBEDDING_GLOBAL_RANKS = None
    _VIRTUAL_PIPELINE_WORLD_SIZE = _VIRTUAL_PIPELINE_RANK = None


def _distributed() -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return False
    if not model_parallel_is_initialized():
        raise RuntimeError("torch.distributed is initialised but the model parallel groups "
                           "are not: call megatron.core.parallel_state."
                           "initialize_model_parallel() first")
    return True


# ---- groups -------------------------------------------------------------------------
def get_tensor_model_parallel_group():
    """This rank's tensor-parallel group (None without torch.distributed)."""
    return _TENSOR_MODEL_PARALLEL_GROUP if _distributed() else None


def get_pipeline_model_parallel_group():
    """This rank's pipeline group (None without torch.distributed)."""
    return _PIPELINE_MODEL_PARALLEL_GROUP if _distributed() else None


def get_data_parallel_group():
    """This rank's data-parallel group (None without torch.distributed)."""
    return _DATA_PARALLEL_GROUP if _distributed() else None


def get_model_parallel_group():
    """The TP x PP ranks that share this rank's data-parallel index."""
    return _MODEL_PARALLEL_GROUP if _distributed() else None


def get_embedding_group():
    """First and last pipeline stage of this rank's pipeline (None if not a member)."""
    if not _distributed():
        return None
    return _EMBEDDING_GROUP if dist.get_rank() in _EMBEDDING_GLOBAL_RANKS else None


def is_rank_in_embedding_group() -> bool:
    """True on the first and the last pipeline stage."""
    return not _distributed() or dist.get_rank() in _EMBEDDING_GLOBAL_RANKS


# ---- sizes and ranks ----------------------------------------------------------------
def _size(group) -> int:
    return dist.get_world_size(group=group) if _distributed() else 1


def _rank(group) -> int:
    return dist.get_rank(group=group) if _distributed() else 0


def get_tensor_model_parallel_world_size() -> int:
    return _size(_TENSOR_MODEL_PARALLEL_GROUP)


def get_tensor_model_parallel_rank() -> int:
    return _rank(_TENSOR_MODEL_PARALLEL_GROUP)


def get_pipeline_model_parallel_world_size() -> int:
    return _size(_PIPELINE_MODEL_PARALLEL_GROUP)


def get_pipeline_model_parallel_rank() -> int:
    return _rank(_PIPELINE_MODEL_PARALLEL_GROUP)


def get_data_parallel_world_size() -> int:
    return _size(_DATA_PARALLEL_GROUP)


def get_data_parallel_rank() -> int:
    return _rank(_DATA_PARALLEL_GROUP)


def get_virtual_pipeline_model_parallel_world_size() -> int | None:
    return _VIRTUAL_PIPELINE_WORLD_SIZE


def get_virtual_pipeline_model_parallel_rank() -> int | None:
    return _VIRTUAL_PIPELINE_RANK


def set_virtual_pipeline_model_parallel_rank(rank: int) -> None:
    global _VIRTUAL_PIPELINE_RANK
    _VIRTUAL_PIPELINE_RANK = rank


def is_pipeline_first_stage(ignore_virtual: bool = False) -> bool:
    """True on the first pipeline stage (and first virtual chunk unless ignored)."""
    if not ignore_virtual and _VIRTUAL_PIPELINE_WORLD_SIZE is not None \
            and _VIRTUAL_PIPELINE_RANK != 0:
        return False
    return get_pipeline_model_parallel_rank() == 0


def is_pipeline_last_stage(ignore_virtual: bool = False) -> bool:
    """True on the last pipeline stage (and last virtual chunk unless ignored)."""
    if not ignore_virtual and _VIRTUAL_PIPELINE_WORLD_SIZE is not None \
            and _VIRTUAL_PIPELINE_RANK != _VIRTUAL_PIPELINE_WORLD_SIZE - 1:
        return False
    return get_pipeline_model_parallel_rank() == get_pipeline_model_parallel_world_size() - 1


def get_pipeline_model_parallel_last_rank() -> int:
    """Global rank of the last stage of this rank's pipeline (the one with the logits)."""
    return _PIPELINE_GLOBAL_RANKS[-1] if _distributed() else 0


def get_pipeline_model_parallel_next_rank() -> int:
    """Global rank of the next stage (wraps around)."""
    if not _distributed():
        return 0
    size = len(_PIPELINE_GLOBAL_RANKS)
    return _PIPELINE_GLOBAL_RANKS[(get_pipeline_model_parallel_rank() + 1) % size]


def get_pipeline_model_parallel_prev_rank() -> int:
    """Global rank of the previous stage (wraps around)."""
    if not _distributed():
        return 0
    size = len(_PIPELINE_GLOBAL_RANKS)
    return _PIPELINE_GLOBAL_RANKS[(get_pipeline_model_parallel_rank() - 1) % size]


# ---- expert parallelism (MoE) ---------------------------------------------------------
def get_expert_model_parallel_group():
    """The ranks that split this rank's MoE experts (None without torch.distributed)."""
    return _EXPERT_MODEL_PARALLEL_GROUP if _distributed() else None


def get_expert_data_parallel_group():
    """The ranks holding the same experts as this rank (None without torch.distributed)."""
    return _EXPERT_DATA_PARALLEL_GROUP if _distributed() else None


def get_expert_model_parallel_world_size() -> int:
    return _size(_EXPERT_MODEL_PARALLEL_GROUP)


def get_expert_model_parallel_rank() -> int:
    return _rank(_EXPERT_MODEL_PARALLEL_GROUP)


def get_expert_data_parallel_rank() -> int:
    return _rank(_EXPERT_DATA_PARALLEL_GROUP)
