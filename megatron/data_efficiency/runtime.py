"""The training loop's one handle on data efficiency.

The loop calls every method here unconditionally, each step; this class is the plain
behaviour (no curriculum, no random-LTD). Curriculum learning and random-LTD extend it by
returning a curriculum sampler, a batch transform, a token-drop plan and the tokens a
step really consumed; the loop does not change.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron.data_efficiency.token_accounting import tokens_per_step


@dataclass(frozen=True)
class DataEfficiencyConfig:
    """Sizes the runtime needs; built once from the flags."""
    global_batch_size: int
    seq_length: int
    num_layers: int
    seed: int = 1234


class DataEfficiencyRuntime:
    """Plain runtime: full sequences, every layer sees every token."""

    def __init__(self, config: DataEfficiencyConfig) -> None:
        self.config = config

    def tokens_for_step(self, iteration: int) -> int:
        """Tokens the optimizer step ``iteration`` (0-based) consumes."""
        del iteration
        return tokens_per_step(self.config.global_batch_size, self.config.seq_length,
                               self.config.num_layers)

    def seq_length_for_step(self, iteration: int) -> int:
        """Sequence length the model sees at step ``iteration`` (pipeline buffer shapes)."""
        del iteration
        return self.config.seq_length

    def train_batch_sampler(self, dataset, consumed_samples: int, micro_batch_size: int,
                            dp_rank: int, dp_size: int):
        """A batch sampler for the training set, or None for the default
        ``MegatronPretrainingSampler`` starting at ``consumed_samples``."""
        del dataset, consumed_samples, micro_batch_size, dp_rank, dp_size
        return None

    def transform_batch(self, batch: dict, iteration: int) -> dict:
        """Reshape a collated micro-batch (e.g. truncate for seqtru); identity here."""
        del iteration
        return batch

    def token_drop_plan(self, iteration: int, microbatch: int):
        """The random-LTD plan for one micro-batch, or None (no dropping)."""
        del iteration, microbatch
        return None

    def tensorboard_scalars(self, iteration: int) -> dict[str, float]:
        """Extra scalars to log (e.g. the curriculum difficulty); none here."""
        del iteration
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state
