"""The GLUE TSV readers (column layouts of the GLUE download, header lines, labels),
their one-line errors, and the [CLS] a [SEP] b [SEP] inputs built from the examples."""
from __future__ import annotations

import numpy as np
import pytest

from megatron.errors import BadInputError, MissingInputError
from tasks.data_utils import tokens_types_paddings
from tasks.glue.data import read_glue_tsv

MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")


def _write(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _mnli_row(i: int, a: str, b: str, label: str, extra_labels: int = 1) -> str:
    return "\t".join([str(i), "31193", f"{i}n", "fiction", "(p)", "(h)", "(P)", "(H)", a, b,
                      *([label] * extra_labels), label])


def test_mnli_train_and_dev_layouts(tmp_path):
    """Texts from columns 8 / 9, the gold label from the last column (train: 12 columns,
    dev: 16, label1..label5 then gold_label); labels in Megatron's order."""
    train = _write(tmp_path, "train.tsv", [MNLI_HEADER,
                                           _mnli_row(0, " A  man   sleeps.", "He rests.",
                                                     "entailment"),
                                           _mnli_row(1, "x", "y", "contradiction"),
                                           _mnli_row(2, "p", "q", "neutral")])
    examples, skipped = read_glue_tsv("MNLI", train)
    assert skipped == 0
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("A man sleeps.", "He rests.", 1), ("x", "y", 0), ("p", "q", 2)]
    assert examples[1].where == f"{train}:3"
    dev_header = MNLI_HEADER.replace("label1\t", "label1\tlabel2\tlabel3\tlabel4\tlabel5\t")
    dev = _write(tmp_path, "dev_matched.tsv",
                 [dev_header, _mnli_row(7, "a", "b", "neutral", extra_labels=5)])
    assert [(e.text_a, e.label) for e in read_glue_tsv("MNLI", dev)[0]] == [("a", 2)]


def test_qqp_columns_and_empty_questions_skipped(tmp_path):
    path = _write(tmp_path, "dev.tsv", [
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "1\t11\t12\tHow do I cook?\tHow to cook?\t1",
        "2\t13\t14\tWhat is it?\t\t0",          # an empty question: skipped, counted
        "3\t15\t16\tWhy?\tWhen?\t0"])
    examples, skipped = read_glue_tsv("QQP", path)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("How do I cook?", "How to cook?", 1), ("Why?", "When?", 0)]
    assert skipped == 1


def test_sst2_cola_rte_stsb_layouts(tmp_path):
    sst = _write(tmp_path, "sst.tsv", ["sentence\tlabel", "a fine film \t1", "dull\t0"])
    assert [(e.text_a, e.text_b, e.label) for e in read_glue_tsv("SST-2", sst)[0]] == [
        ("a fine film", None, 1), ("dull", None, 0)]
    cola = _write(tmp_path, "cola.tsv", ["gj04\t1\t\tOur friends won't buy it.",
                                         "gj04\t0\t*\tThey drank the pub."])   # no header
    assert [(e.text_a, e.label) for e in read_glue_tsv("CoLA", cola)[0]] == [
        ("Our friends won't buy it.", 1), ("They drank the pub.", 0)]
    rte = _write(tmp_path, "rte.tsv", ["index\tsentence1\tsentence2\tlabel",
                                       "0\tA.\tB.\tnot_entailment"])
    assert read_glue_tsv("RTE", rte)[0][0].label == 1
    stsb = _write(tmp_path, "stsb.tsv", [
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn airplane.\t5.000"])
    assert read_glue_tsv("STS-B", stsb)[0][0].label == pytest.approx(5.0)


@pytest.mark.parametrize("task,lines,message", [
    ("SST-2", ["sentence\tlabel", "good\t1", "bad\t0\textra"],
     r"bad\.tsv:3: 3 tab-separated columns, expected 2 \(SST-2\)"),
    ("MNLI", [MNLI_HEADER, _mnli_row(0, "a", "b", "maybe")],
     r"bad\.tsv:2: label 'maybe' is not one of contradiction, entailment, neutral"),
    ("STS-B", ["h\t" * 9 + "h", "\t".join(["0"] * 9 + ["high"])],
     r"bad\.tsv:2: label 'high' is not a number"),
    ("SST-2", ["index\tsentence", "0\ta film"],
     r"bad\.tsv:1: an unlabelled GLUE test file"),
    ("QQP", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "", "1\t1\t2\ta\tb\t1"],
     r"bad\.tsv:2: empty line"),
])
def test_malformed_rows_name_file_and_line(tmp_path, task, lines, message):
    path = _write(tmp_path, "bad.tsv", lines)
    with pytest.raises(BadInputError, match=message) as err:
        read_glue_tsv(task, path)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match="nope.tsv: MNLI file not found"):
        read_glue_tsv("MNLI", str(tmp_path / "nope.tsv"))


def test_inputs_are_megatrons_cls_a_sep_b_sep():
    ids, types, mask = tokens_types_paddings([5, 6], [7], 8, cls_id=1, sep_id=2, pad_id=0)
    assert ids.tolist() == [1, 5, 6, 2, 7, 2, 0, 0]
    assert types.tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert mask.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    ids, types, mask = tokens_types_paddings([5, 6, 7], None, 4, 1, 2, 0)   # cut, [SEP] kept
    assert ids.tolist() == [1, 5, 6, 2] and mask.tolist() == [1, 1, 1, 1]
    ids, types, _ = tokens_types_paddings([5], [7, 8, 9], 5, 1, 2, 0)      # b loses its end
    assert ids.tolist() == [1, 5, 2, 7, 2] and types.tolist() == [0, 0, 0, 1, 1]
    assert ids.dtype == np.int64
