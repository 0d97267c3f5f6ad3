"""pretrain_gpt.py with one failure injected (test-only entry point; production code has
no hook). ``MEGATRON_TEST_FAULT=PHASE:STEP[:RANK]`` picks it:

* ``loader:N``   the training dataset raises in a DataLoader worker, on the first sample
                 of step N (as a read error of a damaged file would);
* ``forward:N``  the forward step raises on step N's first micro-batch;
* ``backward:N`` step N's loss raises while its gradients are computed;
* ``optimizer:N`` step N's loss is NaN, so the optimizer step finds NaN gradients (the
                 real ``TrainingDivergedError`` path);
* ``eval``       the validation dataset raises in a worker at the first evaluation;
* ``save:N``     the disk fills up while iteration N's checkpoint is written (a partial
                 file, then ``ENOSPC``);
* ``stall-save:N`` the background write of iteration N's checkpoint (``--async-save``)
                 writes part of a shard, then hangs until the process is killed;
* ``none``       no failure.

``RANK`` limits it to one global rank (default: every rank). Steps are 1-based.
The run goes through ``run_main``, exactly as ``pretrain_gpt.py``'s.
"""
from __future__ import annotations

import errno
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import torch  # noqa: E402

import pretrain_gpt  # noqa: E402
from megatron.core.enums import ModelType  # noqa: E402
from megatron.errors import run_main  # noqa: E402
from megatron.training import pretrain  # noqa: E402

PHASE, STEP, RANK = (os.environ.get("MEGATRON_TEST_FAULT", "none") + "::").split(":")[:3]
STEP = int(STEP or 0)
_calls = {"train": 0, "eval_loaders": 0}


def _armed() -> bool:
    return not RANK or int(os.environ.get("RANK", "0")) == int(RANK)


class FailingDataset(torch.utils.data.Dataset):
    """``dataset`` whose item ``fail_at`` raises (in whichever process reads it)."""

    def __init__(self, dataset, fail_at: int) -> None:
        self.dataset, self.fail_at = dataset, fail_at

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        if idx == self.fail_at:
            raise OSError(f"injected read error at sample {idx} (worker pid {os.getpid()})")
        return self.dataset[idx]


def datasets_provider(sizes):
    train, valid, test = pretrain_gpt.train_valid_test_datasets_provider(sizes)
    args = pretrain_gpt.get_run_config().training
    if PHASE == "loader" and _armed():
        train = FailingDataset(train, (STEP - 1) * args.global_batch_size)
    if PHASE == "eval" and _armed() and valid is not None:
        valid = FailingDataset(valid, 0)   # each evaluation reads from the split's start
    return train, valid, test


def forward_step(data_iterator, model):
    output, loss_func = pretrain_gpt.forward_step(data_iterator, model)
    if not model.training:
        return output, loss_func
    args = pretrain_gpt.get_run_config().training
    step = _calls["train"] // args.num_microbatches + 1
    first = _calls["train"] % args.num_microbatches == 0
    _calls["train"] += 1
    if not (_armed() and step == STEP and first):
        return output, loss_func
    if PHASE == "forward":
        raise RuntimeError(f"injected forward failure at step {step}")
    if PHASE == "backward":
        def failing_loss(output_tensor):
            loss, reported = loss_func(output_tensor)

            def hook(grad):
                raise RuntimeError(f"injected backward failure at step {step}")
            loss.register_hook(hook)
            return loss, reported
        return output, failing_loss
    if PHASE == "optimizer":
        def nan_loss(output_tensor):
            loss, reported = loss_func(output_tensor)
            return loss * float("nan"), reported
        return output, nan_loss
    return output, loss_func


def _fill_disk_at_save(step: int) -> None:
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, str) and f"iter_{step:07d}.tmp" in f:
            with open(f, "wb") as out:
                out.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device", f)
        return real_save(obj, f, *args, **kwargs)
    torch.save = save


def _stall_async_save(step: int) -> None:
    from megatron.checkpointing import dist_format
    real_write = dist_format.write

    def write(state, folder, process_group=None):
        if f"iter_{step:07d}.tmp" not in folder:
            return real_write(state, folder, process_group)
        with open(os.path.join(folder, "__0_0.distcp"), "wb") as out:
            out.write(b"PK\x03\x04 partial")
        threading.Event().wait()     # until kill -9
    dist_format.write = write


def main():
    if PHASE == "save" and _armed():
        _fill_disk_at_save(STEP)
    if PHASE == "stall-save" and _armed():
        _stall_async_save(STEP)
    return pretrain(datasets_provider, pretrain_gpt.model_provider, ModelType.encoder_or_decoder,
                    forward_step)


if __name__ == "__main__":
    run_main(main)
