"""Every tensor handed to a collective lives on the device its group serves, checked on the
CPU: pretrain_gpt.py's real pretrain() on 2 gloo ranks under a simulated CUDA device whose
groups refuse CPU tensors exactly as NCCL does (tests/simulated_accelerator.py).

The runs go through every code path that issues a collective:
* PP2, bf16: pipeline p2p (1F1B), the tied-embedding sync, the curriculum's token counts
  (seqtru) and random-LTD, evaluation, --exit-duration-in-mins and --exit-signal-handler
  flags, the Adam-state norms (--log-optimizer-states-to-tensorboard), a checkpoint;
* DP2, MoE with EP2, bf16, the distributed optimizer: the all-to-all, the expert and
  dense gradient buffers reduce-scattered and the parameters all-gathered, the MoE monitor;
* TP2 with sequence parallelism, fp16: the tensor-parallel mappings, the vocab-parallel
  loss, the sequence-parallel gradients, the loss scaler's overflow vote;
and, called directly: BERT's seqreo transform on a collated (host) batch and the
gradient-norm fallback of a rank without gradients. The numbers are a CPU run's (the same
CPU kernels compute the wrapped data). Runs in the shared 2-rank spawn (tests/conftest.py).
"""
from __future__ import annotations

import os

import torch

from tests.parallel.test_pretrain_e2e import DATA_EFFICIENCY, _corpus, _flags

RUNS = {
    "pp2": ["--pipeline-model-parallel-size", "2", "--bf16", *DATA_EFFICIENCY,
            "--exit-duration-in-mins", "100", "--exit-signal-handler",
            "--log-optimizer-states-to-tensorboard", "--tensorboard-log-interval", "1"],
    "dp2_moe": ["--num-experts", "4", "--expert-model-parallel-size", "2", "--bf16",
                "--use-distributed-optimizer"],
    "tp2_sp": ["--tensor-model-parallel-size", "2", "--sequence-parallel", "--fp16"],
}
# collectives each kind of run must have issued (and had checked)
EXPECTED = {"allreduce_", "send", "recv_", "alltoall_base_", "_reduce_scatter_base_",
            "_allgather_base_", "allgather_"}


def _pretrain(prefix: str, extra: list[str]) -> list:
    import pretrain_gpt
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    state = pretrain(pretrain_gpt.train_valid_test_datasets_provider,
                     pretrain_gpt.model_provider, ModelType.encoder_or_decoder,
                     pretrain_gpt.forward_step, argv=_flags(prefix, extra))
    return state.history


def _direct_checks() -> dict:
    """The collectives outside pretrain()'s GPT runs, on a DP2 layout."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.data_efficiency.curriculum.transforms import seqreo
    from megatron.optimizer.clip_grads import clip_grad_norm
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(1, 1)
    rank = dist.get_rank()
    mask = torch.zeros(2, 32, dtype=torch.long)      # a collated BERT batch, on the host
    mask[:, :10 + 7 * rank] = 1                       # rank 1 holds the longest sample
    _, shape = seqreo({"padding_mask": mask}, group=parallel_state.get_data_parallel_group())
    norm = clip_grad_norm([], 1.0)                    # a rank with no gradients at all
    try:                                              # the check is live
        dist.all_reduce(torch.zeros(1))
        refused = ""
    except RuntimeError as exc:
        refused = str(exc)
    parallel_state.destroy_model_parallel()
    return {"seqreo_length": shape.seq_length, "norm": norm, "refused": refused}


def worker(rank: int, world_size: int, folder: str) -> dict:
    from tests.simulated_accelerator import seen, simulated_accelerator
    prefix = os.path.join(folder, "corpus")
    out = {}
    with simulated_accelerator():
        for name, extra in RUNS.items():
            extra = [*extra, "--tensorboard-dir", os.path.join(folder, f"tb_{name}")]
            if name == "pp2":
                extra += ["--save", os.path.join(folder, "ckpt")]
            out[name] = _pretrain(prefix, extra)
        out["direct"] = _direct_checks()
    out["seen"] = dict(seen)
    return out


def two_rank_jobs(tmp_path_factory) -> dict:
    """The simulated runs, in the session's shared 2-rank spawn (tests/conftest.py); the
    corpus is written here."""
    folder = str(tmp_path_factory.mktemp("devices"))
    _corpus(os.path.join(folder, "corpus"))
    return {"devices": (worker, folder)}


def test_every_collective_gets_tensors_on_its_groups_device(two_rank_spawn):
    per_rank = two_rank_spawn["devices"]
    last = per_rank[-1]
    for name in RUNS:
        losses = [loss for _, loss in last[name]]
        # 3 steps of a 64-token vocabulary from its initial loss ln(64) = 4.16 (the same
        # runs on the plain CPU log the same losses to within 1e-3: the simulated device
        # takes other attention kernels)
        assert len(losses) == 3 and all(abs(loss - 4.16) < 0.1 for loss in losses), name
    for result in per_rank:
        assert EXPECTED <= set(result["seen"]), sorted(result["seen"])
        direct = result["direct"]
        assert direct["seqreo_length"] == 24              # 17 real tokens -> multiple of 8
        assert direct["norm"] == 0.0
        assert "No backend type associated with device type cpu" in direct["refused"]
