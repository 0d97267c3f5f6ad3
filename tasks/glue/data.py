"""GLUE TSV files (the GLUE benchmark's own download layout), read into examples.

One table, ``TASKS``, says for each task which columns hold the texts and the label, how
labels are spelled and whether the file starts with a header line (every file does but
CoLA's train/dev). The layouts are the GLUE files' (and Megatron's ``tasks/glue/*.py``):

====== ======================================= ============ =========================
task   columns (0-based)                       label        values
====== ======================================= ============ =========================
MNLI   8 sentence1, 9 sentence2                last         contradiction / entailment
                                                            / neutral -> 0 / 1 / 2
QQP    3 question1, 4 question2 (6 columns)    5            0 / 1
QNLI   1 question, 2 sentence (4 columns)      3            entailment / not_entailment
RTE    1 sentence1, 2 sentence2 (4 columns)    3            entailment / not_entailment
MRPC   3 #1 String, 4 #2 String (5 columns)    0            0 / 1
SST-2  0 sentence (2 columns)                  1            0 / 1
CoLA   3 sentence (4 columns, no header)       1            0 / 1
STS-B  7 sentence1, 8 sentence2 (10 columns)   9            a float (regression)
====== ======================================= ============ =========================

Every row must have as many columns as the header (MNLI: 12 in train, 16 in dev). A row
that does not, an unknown label or a missing text stops with one line naming
``file:line``. GLUE's unlabelled test files (header starting with ``index`` / ``id``
and the test column count) are refused: finetuning and evaluation need labels. Rows
whose text is empty (a few in QQP) are skipped and counted, as Megatron does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from megatron.errors import BadInputError, MissingInputError


@dataclass(frozen=True)
class Example:
    """One labelled example: ``label`` is a class id, or a float for a regression."""
    text_a: str
    text_b: str | None
    label: int | float
    where: str          # "file:line", for messages


@dataclass(frozen=True)
class GlueLayout:
    """Where a task's TSV keeps its texts and label (column indices; -1 = the last)."""
    text_a: int
    text_b: int | None
    label: int
    labels: tuple[str, ...] | None     # spellings in class-id order; None: a float
    columns: int | None                # exact column count (None: the header's)
    header: bool = True
    test_columns: int | None = None    # column count of the task's unlabelled test file

    @property
    def num_classes(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_NLI = ("entailment", "not_entailment")
_BINARY = ("0", "1")
TASKS: dict[str, GlueLayout] = {
    "MNLI": GlueLayout(8, 9, -1, ("contradiction", "entailment", "neutral"), None,
                       test_columns=10),
    "QQP": GlueLayout(3, 4, 5, _BINARY, 6, test_columns=3),
    "QNLI": GlueLayout(1, 2, 3, _NLI, 4, test_columns=3),
    "RTE": GlueLayout(1, 2, 3, _NLI, 4, test_columns=3),
    "MRPC": GlueLayout(3, 4, 0, _BINARY, 5, test_columns=5),
    "SST-2": GlueLayout(0, None, 1, _BINARY, 2, test_columns=2),
    "CoLA": GlueLayout(3, None, 1, _BINARY, 4, header=False, test_columns=2),
    "STS-B": GlueLayout(7, 8, 9, None, 10, test_columns=9),
}


def clean_text(text: str) -> str:
    """One line of single spaces (the tokenizer splits punctuation itself)."""
    return re.sub(r"\s+", " ", text).strip()


def _label(layout: GlueLayout, value: str, where: str) -> int | float:
    value = value.strip()
    if layout.labels is None:
        try:
            return float(value)
        except ValueError:
            raise BadInputError(f"{where}: label {value!r} is not a number") from None
    if value not in layout.labels:
        raise BadInputError(f"{where}: label {value!r} is not one of "
                            f"{', '.join(layout.labels)}")
    return layout.labels.index(value)


def _is_test_header(layout: GlueLayout, row: list[str]) -> bool:
    return row[0].strip().lower() in ("index", "id") and len(row) == layout.test_columns


def read_glue_tsv(task: str, path: str) -> tuple[list[Example], int]:
    """The labelled examples of one GLUE TSV, and the number of empty-text rows skipped.

    Raises:
        MissingInputError: ``path`` does not exist.
        BadInputError: a malformed row (``file:line: ...``) or an unlabelled test file.
    """
    layout = TASKS[task]
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise MissingInputError(f"{path}: {task} file not found") from None
    except UnicodeDecodeError as err:
        raise BadInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") \
            from None
    while lines and not lines[-1].strip():   # blank lines at the end of the file
        lines.pop()
    columns, first = layout.columns, 0
    if layout.header or (lines and _is_test_header(layout, lines[0].split("\t"))):
        if not lines:
            raise BadInputError(f"{path}: empty file (expected a header line)")
        header = lines[0].split("\t")
        if _is_test_header(layout, header):
            raise BadInputError(f"{path}:1: an unlabelled GLUE test file ({len(header)} "
                                f"columns, header {lines[0]!r}); give a labelled train/dev file")
        columns, first = columns or len(header), 1
    examples, skipped = [], 0
    for number, line in enumerate(lines[first:], start=first + 1):
        where = f"{path}:{number}"
        if not line.strip():
            raise BadInputError(f"{where}: empty line")
        row = line.split("\t")
        if len(row) != columns:
            raise BadInputError(f"{where}: {len(row)} tab-separated columns, expected "
                                f"{columns} ({task})")
        text_a = clean_text(row[layout.text_a])
        text_b = None if layout.text_b is None else clean_text(row[layout.text_b])
        label = _label(layout, row[layout.label], where)
        if not text_a or text_b == "":
            skipped += 1
            continue
        examples.append(Example(text_a, text_b, label, where))
    return examples, skipped
