"""Pretrain a BERT model (Megatron's entry point and flags).

    python pretrain_bert.py --num-layers 4 --hidden-size 256 --num-attention-heads 4 \\
        --seq-length 128 --max-position-embeddings 128 --micro-batch-size 8 \\
        --global-batch-size 16 --train-iters 1000 --lr 1e-4 \\
        --data-path my_text_sentence --vocab-file vocab.txt --split 949,50,1

The data must be sentence-level (``tools/preprocess_data.py --split-sentences``). The loss
is the masked-LM loss (mean over the predicted positions) plus, unless
``--bert-no-binary-head``, the sentence-order (``is_random``) loss; both are logged as
``lm loss`` and ``sop loss``. The tokenizer defaults to ``BertWordPieceLowerCase``.

``pretrain()`` is given ``ModelType.encoder`` so that every pipeline stage reads the batch
(the padding mask) and the data-efficiency runtime picks the BERT batch transforms (seqtru
on [b, s] tensors, seqreo), and ``BertSamples``: how a curriculum's analyzer index numbers
BERT samples and the analyzer command that builds one. The losses returned per
micro-batch are this rank's; the training loop averages them over micro-batches and
data-parallel ranks once a step.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from megatron.core.enums import ModelType
from megatron.data.bert_flags import BERT_ARGS_DEFAULTS, add_bert_args
from megatron.data_efficiency.data_family import DataFamily, TrainingSamples
from megatron.errors import BadConfigError, run_main
from megatron.initialize import get_run_config, get_tokenizer
from megatron.run_config import RunConfig
from megatron.training import pretrain, print_rank_0


class BertSamples(DataFamily):
    """BERT's sample numbering: the ``BertDataset`` samples mapping, which
    ``--short-seq-prob`` and the binary head shape; the analyzer reproduces it with
    ``--model bert`` and the same two flags."""

    def __init__(self, short_seq_prob: float = 0.1, binary_head: bool = True) -> None:
        self.analyzer_flags = ("--model", "bert", "--short-seq-prob", str(short_seq_prob)) + \
            (() if binary_head else ("--bert-no-binary-head",))

    @classmethod
    def from_config(cls, config: RunConfig) -> "BertSamples":
        return cls(config.extra["short_seq_prob"], config.extra["bert_binary_head"])

    def fingerprint(self, dataset: Any, samples: TrainingSamples) -> str:
        from megatron.data_efficiency.analyzer.bert_samples import bert_samples_fingerprint
        return bert_samples_fingerprint(samples.prefix, samples.split, samples.seq_length,
                                        samples.seed, dataset.samples_mapping)


def model_provider(pre_process: bool = True, post_process: bool = True) -> torch.nn.Module:
    """A BERT model for this pipeline stage (binary head unless --bert-no-binary-head)."""
    from megatron.model.bert_model import BertModel
    config = get_run_config()
    binary_head = config.extra["bert_binary_head"]
    return BertModel(config.model, num_tokentypes=2 if binary_head else 0,
                     add_binary_head=binary_head, parallel_output=True,
                     pre_process=pre_process, post_process=post_process)


def get_batch(data_iterator) -> dict:
    """One micro-batch for this stage.

    Returns a dict with ``tokens``, ``types``, ``labels`` [b, s] long (``labels`` -1 where
    nothing is predicted), ``loss_mask`` [b, s] float, ``padding_mask`` [b, s] long (1 = real
    token), ``is_random`` [b] long (sentence-order label), ``sample_id`` [b] and
    ``token_drop_plan``. ``types`` is None under --bert-no-binary-head (no token types).
    """
    binary_head = get_run_config().extra["bert_binary_head"]
    batch = next(data_iterator)
    if "text" not in batch:
        # BERT needs the padding mask on every stage; pretrain() feeds every stage of a
        # BERT run, but under the interleaved schedule only the chunks that read data.
        raise RuntimeError("pretrain_bert.py: a model chunk without data needs the BERT "
                           "padding mask; interleaved pipelines are not supported for BERT")
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    out = {"token_drop_plan": batch.get("token_drop_plan")}
    for key in ("text", "types", "labels", "padding_mask", "is_random", "sample_id"):
        out[key] = batch[key].long().to(device, non_blocking=True)
    out["tokens"] = out.pop("text")
    out["loss_mask"] = batch["loss_mask"].float().to(device, non_blocking=True)
    if not binary_head:
        out["types"] = None
    return out


def loss_func(loss_mask: torch.Tensor, sentence_order: torch.Tensor, output_tensor):
    """Masked-LM loss (mean over predicted positions) + sentence-order loss.

    Args:
        loss_mask: [b, s] float, 1 at the predicted positions.
        sentence_order: [b] long, 1 where segments A and B were swapped.
        output_tensor: (lm_loss [b, s] fp32, binary_logits [b, 2] or None) from the model.
    """
    lm_loss_, sop_logits = output_tensor
    mask = loss_mask.reshape(-1).float()
    lm_loss = torch.sum(lm_loss_.float().reshape(-1) * mask) / mask.sum().clamp(min=1.0)
    if sop_logits is None:
        return lm_loss, {"lm loss": lm_loss.detach()}
    sop_loss = F.cross_entropy(sop_logits.view(-1, 2).float(), sentence_order.view(-1),
                               ignore_index=-1)
    return lm_loss + sop_loss, {"lm loss": lm_loss.detach(), "sop loss": sop_loss.detach()}


def forward_step(data_iterator, model):
    """Forward one micro-batch; returns the stage output and the loss function."""
    b = get_batch(data_iterator)
    output = model(b["tokens"], b["padding_mask"], tokentype_ids=b["types"],
                   lm_labels=b["labels"], token_drop_plan=b["token_drop_plan"])
    return output, partial(loss_func, b["loss_mask"], b["is_random"])


def train_valid_test_datasets_provider(train_val_test_num_samples: list[int]):
    """BERT datasets over ``--data-path`` (sentence-level stores) split by ``--split``
    (the train samples mapping loaded from ``--train-idx-path`` when given)."""
    from megatron.data.bert_dataset import build_train_valid_test_datasets
    from megatron.deepspeed_compat import bert_train_mapping
    config = get_run_config()
    data, extra = config.data, config.extra
    if not data.data_path:
        raise BadConfigError("pretrain_bert.py needs --data-path (a --split-sentences token store)")
    print_rank_0(" > building train, validation, and test datasets for BERT ...")
    datasets = build_train_valid_test_datasets(
        data_prefix=list(data.data_path), splits_string=data.split,
        train_valid_test_num_samples=train_val_test_num_samples,
        max_seq_length=config.training.seq_length, masked_lm_prob=extra["mask_prob"],
        short_seq_prob=extra["short_seq_prob"], seed=config.training.seed,
        tokenizer=get_tokenizer(), binary_head=extra["bert_binary_head"],
        cache_dir=data.data_cache_path, train_mapping=bert_train_mapping(data))
    print_rank_0(" > finished creating BERT datasets ...")
    return datasets


def main(argv: list[str] | None = None):
    """Run pretrain() with BERT's providers; ``argv`` defaults to ``sys.argv[1:]``."""
    return pretrain(train_valid_test_datasets_provider, model_provider, ModelType.encoder,
                    forward_step,
                    extra_args_provider=add_bert_args, args_defaults=dict(BERT_ARGS_DEFAULTS),
                    argv=argv, data_family=BertSamples.from_config)


if __name__ == "__main__":
    run_main(main)   # the project's errors: one "error: ..." line, exit 1
