"""RACE-style multiple choice: the folder reader, the four-row inputs, and a finetuning
run end to end (four model rows per question, accuracy over questions)."""
from __future__ import annotations

import json
import os

import pytest

from megatron.errors import BadInputError
from tasks import main as tasks_main
from tasks.race.data import MultipleChoiceDataset, read_race


class _Tokenizer:
    cls, sep, pad = 1, 2, 0

    @staticmethod
    def tokenize(text: str) -> list[int]:
        return [10 + len(word) for word in text.split()]


def _article(words: list[str], i: int) -> dict:
    article = " ".join(words[i:i + 12])
    return {"article": article, "id": f"m{i}.txt",
            "questions": ["Which word is in the text?", "The text says _ first."],
            "options": [[words[i + 1], words[40], words[41], words[42]],
                        [words[43], words[44], words[i], words[45]]],
            "answers": ["A", "C"]}


def _write_race(folder: str, words: list[str], first: int, count: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i in range(first, first + count):
        with open(os.path.join(folder, f"{i}.txt"), "w") as f:
            f.write(json.dumps(_article(words, i)) + "\n")


def test_reader_and_four_row_inputs(tmp_path):
    words = [f"w{i}" for i in range(60)]
    _write_race(str(tmp_path / "dev" / "middle"), words, 0, 2)
    examples = read_race(str(tmp_path / "dev" / "middle"))
    assert [e.label for e in examples] == [0, 2, 0, 2]
    assert examples[0].choices[0] == "Which word is in the text? w1"
    assert examples[1].choices[2] == "The text says w0 first."     # "_" filled in
    item = MultipleChoiceDataset("dev-middle", examples, _Tokenizer(), 16)[1]
    assert item["text"].shape == item["types"].shape == item["padding_mask"].shape == (4, 16)
    assert item["text"][2, :6].tolist() == [1, 13, 14, 14, 12, 16]   # [CLS] The text says w0 first.
    assert int(item["label"]) == 2


def test_malformed_line_names_file_and_line(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "1.txt").write_text(json.dumps({"article": "a", "questions": ["q"],
                                              "options": [["x", "y"]], "answers": ["A"]}))
    with pytest.raises(BadInputError, match=r"1\.txt:1: each question needs 4 options"):
        read_race(str(folder))
    (folder / "1.txt").write_text("{not json\n")
    with pytest.raises(BadInputError, match=r"1\.txt:1: not JSON"):
        read_race(str(folder))


def test_finetune_race_end_to_end(glue_env, tmp_path, capsys):
    from tasks.glue.synthetic import vocabulary_words
    words = vocabulary_words(glue_env["vocab"])[:60]
    _write_race(str(tmp_path / "train" / "middle"), words, 0, 8)     # 16 questions
    _write_race(str(tmp_path / "dev" / "middle"), words, 20, 3)      # 6 questions
    flags = glue_env["flags"]("--task", "RACE", "--train-data", str(tmp_path / "train" / "middle"),
                              "--valid-data", str(tmp_path / "dev" / "middle"),
                              "--micro-batch-size", "2", "--global-batch-size", "4",
                              "--eval-interval", "2", "--eval-iters", "1", "--num-workers", "0",
                              "--log-interval", "2",
                              epochs=1)
    results = tasks_main.main(flags)
    out = capsys.readouterr().out
    assert results["train_iters"] == 4
    assert results["final"]["metrics"]["dev-middle"]["total"] == 6
    assert " > |epoch: 0| metrics for dev-middle: correct / total = " in out
    assert "global batch size:    16 |" in out        # model rows: 4 questions x 4 choices
