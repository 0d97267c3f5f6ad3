"""What a finetuning run reports: the scores after every epoch and the validation losses
of ``--eval-interval``, kept in the finetuning checkpoints (a resumed run reports the
whole run) and written as one JSON file."""
from __future__ import annotations

import json
import os


class FinetuneResults:
    """The run's scores.

    Args:
        header: fixed facts of the run (task, checkpoint, seed, sizes), written first.
        main_metric: the number the best epoch is chosen by (``accuracy``, ``mcc``,
            ``spearmanr``), read from each evaluation's ``overall`` entry.
    """

    def __init__(self, header: dict, main_metric: str) -> None:
        self.header, self.main_metric = header, main_metric
        self.evaluations: list[dict] = []    # {"epoch", "iteration", "metrics": {name: {...}}}
        self.validation: list[dict] = []     # {"iteration", "lm loss", ...}

    def add_evaluation(self, epoch: int, iteration: int, metrics: dict | None) -> None:
        """Scores after ``epoch`` (None off the last pipeline stage: nothing to keep)."""
        if metrics is not None:
            self.evaluations.append({"epoch": epoch, "iteration": iteration,
                                     "metrics": metrics})

    def add_validation(self, iteration: int, losses: dict[str, float]) -> None:
        if losses:
            self.validation.append({"iteration": iteration, **losses})

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations, "validation": self.validation}

    def load_state_dict(self, state: dict) -> None:
        self.evaluations = list(state.get("evaluations", []))
        self.validation = list(state.get("validation", []))

    def to_dict(self) -> dict:
        """Header, every evaluation, the best and the last one (by ``main_metric``)."""
        scored = [e for e in self.evaluations if self.main_metric in e["metrics"]["overall"]]
        best = max(scored, key=lambda e: e["metrics"]["overall"][self.main_metric],
                   default=None)
        return {**self.header, "main_metric": self.main_metric,
                "evaluations": self.evaluations, "validation_losses": self.validation,
                "best": best, "final": self.evaluations[-1] if self.evaluations else None}

    def write(self, path: str) -> None:
        """Write the JSON atomically (a temporary file renamed into place)."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)
