"""How a model family numbers its training samples, for the curriculum's analyzer index.

A curriculum sampler reads an analyzer index whose sample ids must be the training set's.
The index carries a fingerprint of the samples it numbers; training computes the same
fingerprint of its own training set and refuses an index that differs, naming the
analyzer command that indexes this run's samples. Which arrays number the samples, and
which analyzer flags reproduce them, belong to the model family:

* ``GPTSamples`` (here, the default): Megatron's ``GPTDataset`` numbering (document,
  sample and shuffle index), the analyzer's default ``--model gpt``; over a blended
  ``--data-path w1 p1 w2 p2 ...`` the ``BlendableDataset``'s ids (``analyzer/blend.py``).
* ``BertSamples`` (``pretrain_bert.py``): the ``BertDataset`` samples mapping and
  BERT's flags (``--model bert --short-seq-prob P [--bert-no-binary-head]``).

A family's entry point hands its class to ``pretrain(..., data_family=...)``, which
builds it once from the run's config (``from_config``) and passes it, with the run's
``TrainingSamples``, down to the data-efficiency runtime: the generic loop never asks
which family it trains, and nothing calls back up into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megatron.errors import BadInputError


@dataclass(frozen=True)
class TrainingSamples:
    """The flags that decide which samples a run trains on; an analyzer run given the same
    numbers them as training does.

    Attributes:
        data_path: ``--data-path``: one prefix, or a blend's ``w1 p1 w2 p2 ...``.
        split, seq_length, seed: ``--split``, ``--seq-length``, ``--seed``.
        train_samples: samples the training set is built for (``RunPlan``): the
            analyzer's ``--train-samples``.
    """
    data_path: tuple[str, ...]
    split: str
    seq_length: int
    seed: int
    train_samples: int

    @property
    def prefix(self) -> str:
        """The one token store of a family whose index describes one store (BERT)."""
        if len(self.data_path) != 1:
            raise ValueError("curriculum sampling over an analyzer index needs --data-path "
                             "with one prefix (or, for GPT samples, a blend's weights and "
                             f"prefixes; given: {list(self.data_path) or None})")
        return self.data_path[0]


class IndexMismatchError(BadInputError):
    """The curriculum's analyzer index numbers other samples than this run's training set.

    Attributes:
        details: JSON-able facts for the run's metrics file (the analyzer command and the
            ``--train-samples`` it needs), so tools need not read the message.
    """

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class DataFamily:
    """How one model family's training set numbers its samples (subclass per family).

    Attributes:
        analyzer_flags: the ``tools/analyze_data.py`` flags that number samples as this
            family's dataset does (beside the ``TrainingSamples`` flags).
    """
    analyzer_flags: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any) -> "DataFamily":
        """The family of a run with this ``RunConfig`` (called once by ``pretrain``)."""
        return cls()

    def fingerprint(self, dataset: Any, samples: TrainingSamples) -> str:
        """The fingerprint an analyzer index of ``dataset``'s samples carries."""
        raise NotImplementedError

    def analyzer_command(self, samples: TrainingSamples, metrics: str = "...",
                         save_path: str = "DIR") -> str:
        """The analyzer run that indexes exactly this run's training samples (``metrics``
        and ``save_path`` left as placeholders unless given)."""
        flags = "".join(f"{flag} " for flag in self.analyzer_flags)
        data_path = samples.prefix if len(samples.data_path) < 2 else " ".join(samples.data_path)
        return (f"python tools/analyze_data.py --data-path {data_path} --granularity sample "
                f"{flags}--split {samples.split} --seq-length {samples.seq_length} "
                f"--seed {samples.seed} --train-samples {samples.train_samples} --metrics {metrics} "
                f"--save-path {save_path}")

    def mismatch(self, err: Exception, dataset: Any,
                 samples: TrainingSamples) -> IndexMismatchError:
        """``err`` (the index's refusal) with the analyzer command that fixes it."""
        command = self.analyzer_command(samples)
        return IndexMismatchError(
            f"{err}\nthis run builds {len(dataset)} training samples; index them with: "
            f"{command}", {"analyzer_command": command, "train_samples": samples.train_samples,
                           "dataset_samples": len(dataset)})


class GPTSamples(DataFamily):
    """Megatron's ``GPTDataset``: samples numbered by its document, sample and shuffle
    index (the analyzer's default, ``--model gpt``)."""

    def fingerprint(self, dataset: Any, samples: TrainingSamples) -> str:
        from megatron.data_efficiency.analyzer.analyzer import gpt_samples_fingerprint
        if hasattr(dataset, "dataset_index"):   # a blend: its own ids
            from megatron.data_efficiency.analyzer.blend import training_blend_fingerprint
            return training_blend_fingerprint(dataset, samples.split, samples.seq_length,
                                              samples.seed)[0]
        if not hasattr(dataset, "shuffle_idx"):
            raise ValueError(f"curriculum sampling over an analyzer index needs the model "
                             f"family's numbering of its training samples: a GPTDataset by "
                             f"default, got {type(dataset).__name__} (pass your family as "
                             f"pretrain(..., data_family=...))")
        return gpt_samples_fingerprint(samples.prefix, samples.split, samples.seq_length,
                                       samples.seed, dataset.doc_idx, dataset.sample_idx,
                                       dataset.shuffle_idx)

    def mismatch(self, err: Exception, dataset: Any,
                 samples: TrainingSamples) -> IndexMismatchError:
        """The refusal, naming what differs when the index or the run is a blend."""
        refusal = super().mismatch(err, dataset, samples)
        meta = getattr(err, "meta", None)
        if meta is None:
            return refusal
        from megatron.data_efficiency.analyzer.blend import (blend_difference,
                                                             training_blend_fingerprint)
        run_blend = (training_blend_fingerprint(dataset, samples.split, samples.seq_length,
                                                samples.seed)[1]
                     if hasattr(dataset, "dataset_index") else None)
        difference = blend_difference(meta, run_blend, len(dataset))
        if not difference:
            return refusal
        return IndexMismatchError(f"{refusal}\nwhat differs: {difference}",
                                  {**refusal.details, "difference": difference})
