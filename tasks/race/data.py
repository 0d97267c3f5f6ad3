"""RACE-style multiple choice: folders of ``.txt`` files, one JSON article per line.

Each line holds ``{"article": str, "questions": [str], "options": [[str] x 4], "answers":
["A".."D"]}`` (the RACE release's layout, as Megatron's ``tasks/race/data.py`` reads it).
Every question is one example of four rows: the question with the choice put in place of
its ``_`` (or appended), cut to 128 tokens, as segment A and the article as segment B.
A line that is not such an object stops with one line naming ``file:line``.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import numpy as np

from megatron.errors import BadInputError, MissingInputError
from tasks.data_utils import ClassificationDataset, tokens_types_paddings
from tasks.glue.data import clean_text

NUM_CHOICES = 4
MAX_QA_TOKENS = 128


@dataclass(frozen=True)
class ChoiceExample:
    """A question: the four ``question + choice`` texts, the article, the right choice."""
    choices: tuple[str, ...]
    context: str
    label: int
    where: str


def _question_examples(data: dict, where: str) -> list[ChoiceExample]:
    keys = ("article", "questions", "options", "answers")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise BadInputError(f"{where}: expected a JSON object with {', '.join(keys)}")
    questions, options, answers = data["questions"], data["options"], data["answers"]
    if not len(questions) == len(options) == len(answers):
        raise BadInputError(f"{where}: {len(questions)} questions, {len(options)} option "
                            f"lists and {len(answers)} answers")
    context, out = clean_text(data["article"]), []
    for question, choices, answer in zip(questions, options, answers):
        if len(choices) != NUM_CHOICES or answer not in "ABCD" or len(answer) != 1:
            raise BadInputError(f"{where}: each question needs {NUM_CHOICES} options and an "
                                f"answer A-D, got {len(choices)} options, answer {answer!r}")
        texts = tuple(clean_text(question.replace("_", c) if "_" in question
                                 else f"{question} {c}") for c in choices)
        out.append(ChoiceExample(texts, context, ord(answer) - ord("A"), where))
    return out


def read_race(folder: str) -> list[ChoiceExample]:
    """Every question of the ``*.txt`` files in ``folder`` (sorted by file name)."""
    if not os.path.isdir(folder):
        raise MissingInputError(f"{folder}: RACE folder not found")
    files = sorted(glob.glob(os.path.join(folder, "*.txt")))
    if not files:
        raise MissingInputError(f"{folder}: no .txt files")
    examples = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BadInputError(f"{path}:{number}: not JSON ({err.msg})") from None
                examples += _question_examples(data, f"{path}:{number}")
    return examples


class MultipleChoiceDataset(ClassificationDataset):
    """Questions as ``[NUM_CHOICES, seq_length]`` rows (``text``, ``types``,
    ``padding_mask`` int64) and the right choice (``label`` int64)."""

    def __getitem__(self, idx: int) -> dict:
        ex, tok = self.examples[idx], self.tokenizer
        context = tok.tokenize(ex.context)
        rows = [tokens_types_paddings(tok.tokenize(qa)[:MAX_QA_TOKENS], context,
                                      self.seq_length, tok.cls, tok.sep, tok.pad)
                for qa in ex.choices]
        text, types, mask = (np.stack(part) for part in zip(*rows))
        return {"text": text, "types": types, "padding_mask": mask, "label": np.int64(ex.label)}
