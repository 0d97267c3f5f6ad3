"""Pretrain a GPT model (Megatron's entry point and flags).

    python pretrain_gpt.py --num-layers 4 --hidden-size 256 --num-attention-heads 4 \\
        --seq-length 256 --micro-batch-size 4 --global-batch-size 8 --train-iters 100 \\
        --lr 1e-3 --data-path my_text_document --tokenizer-type GPTSentencePieceTokenizer \\
        --tokenizer-model tok.model
"""
from __future__ import annotations

from functools import partial

import torch

import torch.distributed as dist

from megatron.core.enums import ModelType
from megatron.errors import run_main
from megatron.core import parallel_state, tensor_parallel
from megatron.initialize import get_run_config, get_tokenizer
from megatron.training import pretrain, print_rank_0
from megatron.utils import get_ltor_masks_and_position_ids


def model_provider(pre_process: bool = True, post_process: bool = True) -> torch.nn.Module:
    """A GPT model for this pipeline stage."""
    from megatron.model.gpt_model import GPTModel
    return GPTModel(get_run_config().model, pre_process=pre_process, post_process=post_process,
                    parallel_output=True)


def get_batch(data_iterator) -> dict:
    """One micro-batch for this stage.

    Returns a dict with ``tokens`` / ``labels`` [b, s] long, ``loss_mask`` [b, s] float,
    ``attention_mask`` (None = causal, or bool [b, 1, s, s]), ``position_ids`` [b, s] and
    ``token_drop_plan``. Pipeline middle stages read no data: they get position ids for
    the step's sequence length and the drop plan only.
    """
    config, tokenizer = get_run_config(), get_tokenizer()
    batch = next(data_iterator)
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    out = {"token_drop_plan": batch.get("token_drop_plan"), "tokens": None, "labels": None,
           "loss_mask": None, "attention_mask": None, "position_ids": None}
    if "text" not in batch:   # a middle pipeline stage
        s = batch["seq_length"]
        mbs = config.training.micro_batch_size
        out["position_ids"] = torch.arange(s, device=device).expand(mbs, s)
        return out
    tokens_ = batch["text"].long().to(device, non_blocking=True)   # [b, s + 1]
    out["tokens"] = tokens_[:, :-1].contiguous()
    out["labels"] = tokens_[:, 1:].contiguous()
    out["attention_mask"], out["loss_mask"], out["position_ids"] = \
        get_ltor_masks_and_position_ids(out["tokens"], tokenizer.eod,
                                        config.data.reset_position_ids,
                                        config.data.reset_attention_mask,
                                        config.data.eod_mask_loss)
    return out


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Mean per-token loss over unmasked tokens (this rank's; the training loop averages
    it over micro-batches and data-parallel ranks once a step).

    Args:
        loss_mask: [b, s] float, 0 where the loss is ignored.
        output_tensor: [b, s] per-token loss from the model.
    """
    losses = output_tensor.float().reshape(-1)
    mask = loss_mask.reshape(-1).float()
    loss = torch.sum(losses * mask) / mask.sum().clamp(min=1.0)
    return loss, {"lm loss": loss.detach()}


def next_token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1.0 where the label has the largest logit (a tie counts as right), else 0.0.

    Args:
        logits: [b, s, v/tp] this tensor-parallel rank's vocabulary slice.
        labels: [b, s] long, global token ids.

    Returns:
        [b, s] float, equal on every tensor-parallel rank.
    """
    logits = logits.float()
    part = logits.shape[-1]
    local = labels - parallel_state.get_tensor_model_parallel_rank() * part
    inside = (local >= 0) & (local < part)
    picked = logits.gather(-1, local.clamp(0, part - 1).unsqueeze(-1)).squeeze(-1)
    label_logit = torch.where(inside, picked, torch.zeros_like(picked))
    best = logits.max(dim=-1).values
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        group = parallel_state.get_tensor_model_parallel_group()
        dist.all_reduce(label_logit, group=group)   # only the owning rank adds non-zero
        dist.all_reduce(best, op=dist.ReduceOp.MAX, group=group)
    return (label_logit >= best).float()


def eval_loss_func(loss_mask: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor):
    """Evaluation: ``loss_func``'s loss plus ``lm accuracy``, next-token accuracy over the
    same (unmasked) tokens.

    Args:
        loss_mask: [b, s] float, 0 where the loss is ignored.
        labels: [b, s] long.
        logits: [b, s, v/tp] from the model called without labels.
    """
    per_token = tensor_parallel.vocab_parallel_cross_entropy(
        logits.transpose(0, 1).float(), labels.transpose(0, 1)).transpose(0, 1)
    loss, reported = loss_func(loss_mask, per_token)
    mask = loss_mask.reshape(-1).float()
    correct = next_token_accuracy(logits, labels).reshape(-1)
    accuracy = torch.sum(correct * mask) / mask.sum().clamp(min=1.0)
    reported["lm accuracy"] = accuracy.detach()   # this rank's; the loop averages over DP
    return loss, reported


def forward_step(data_iterator, model):
    """Forward one micro-batch; returns the stage output and the loss function. In
    evaluation the last stage takes the logits, to report next-token accuracy as well."""
    b = get_batch(data_iterator)
    if not model.training and parallel_state.is_pipeline_last_stage():
        logits = model(b["tokens"], b["position_ids"], b["attention_mask"],
                       token_drop_plan=b["token_drop_plan"])
        return logits, partial(eval_loss_func, b["loss_mask"], b["labels"])
    output = model(b["tokens"], b["position_ids"], b["attention_mask"], labels=b["labels"],
                   token_drop_plan=b["token_drop_plan"])
    return output, partial(loss_func, b["loss_mask"])


def train_valid_test_datasets_provider(train_val_test_num_samples: list[int]):
    """GPT datasets over ``--data-path`` split by ``--split``, or over separate
    ``--train-data-path`` / ``--valid-data-path`` / ``--test-data-path`` (each whole)."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    from megatron.deepspeed_compat import gpt_train_index_maps
    config = get_run_config()
    data = config.data
    build = partial(build_train_valid_test_datasets, seq_length=config.training.seq_length,
                    seed=config.training.seed, cache_dir=data.data_cache_path)
    print_rank_0(" > building train, validation, and test datasets for GPT ...")
    maps = gpt_train_index_maps(data)
    if data.data_path:
        datasets = build(list(data.data_path), data.split, train_val_test_num_samples,
                         train_index_maps=maps)
    else:
        datasets = []
        for i, paths in enumerate((data.train_data_path, data.valid_data_path,
                                   data.test_data_path)):
            split, sizes = ["0", "0", "0"], [0, 0, 0]
            split[i], sizes[i] = "100", train_val_test_num_samples[i]
            datasets.append(build(list(paths), ",".join(split), sizes,
                                  train_index_maps=maps if i == 0 else None)[i]
                            if paths else None)
    print_rank_0(" > finished creating GPT datasets ...")
    return tuple(datasets)


def main(argv: list[str] | None = None):
    """Run pretrain() with GPT's providers; ``argv`` defaults to ``sys.argv[1:]``."""
    return pretrain(train_valid_test_datasets_provider, model_provider,
                    ModelType.encoder_or_decoder, forward_step, argv=argv)


if __name__ == "__main__":
    run_main(main)   # the project's errors: one "error: ..." line, exit 1
