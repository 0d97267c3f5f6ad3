"""tools/prepare_default_corpus.py: the stdlib corpus is deterministic, shuffled by a seed
(so the last documents, Megatron's validation split, are a sample of the whole), capped and
atomic."""

import json
import os
import sysconfig

import pytest

from tests.tools.tool_loader import load_tool

corpus = load_tool("prepare_default_corpus")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_corpus_is_shuffled_real_source_and_deterministic(tmp_path, capsys):
    out = str(tmp_path / "c.jsonl")
    assert corpus.main(["--output", out, "--max-files", "15"]) == 0
    assert "wrote 15 documents" in capsys.readouterr().out
    first = open(out, "rb").read()
    docs = _read(out)
    paths = [d["path"] for d in docs]
    assert len(docs) == 15 and paths != sorted(paths) and all(p.endswith(".py") for p in paths)
    all_paths = corpus.list_sources(sysconfig.get_paths()["stdlib"])
    assert paths == corpus.shuffled(all_paths, 1234)[:15]
    root = sysconfig.get_paths()["stdlib"]
    for d in docs[:3]:
        assert d["text"] == open(os.path.join(root, d["path"]), encoding="utf-8").read()
    corpus.main(["--output", out, "--max-files", "15"])
    assert open(out, "rb").read() == first
    assert os.listdir(tmp_path) == ["c.jsonl"]  # no temp file left behind


def test_max_bytes_and_skip_tests(tmp_path):
    out = str(tmp_path / "b.jsonl")
    s = corpus.write_corpus(out, max_bytes=50_000, skip_tests=True)
    docs = _read(out)
    assert s["documents"] == len(docs) >= 1
    # Stops at the first file that reaches the cap.
    assert sum(len(d["text"].encode()) for d in docs[:-1]) < 50_000 <= s["text_bytes"]
    all_paths = corpus.list_sources(sysconfig.get_paths()["stdlib"], skip_tests=True)
    assert not any("/test/" in "/" + p for p in all_paths)


def test_bad_flags(tmp_path):
    with pytest.raises(SystemExit):
        corpus.main(["--output", str(tmp_path / "x.jsonl"), "--max-files", "0"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        corpus.write_corpus(str(tmp_path / "x.jsonl"), root=str(tmp_path / "nowhere"))


def test_order_is_seeded_stable_and_spreads_the_folders():
    paths = [f"{folder}/m{i}.py" for folder in ("asyncio", "email", "encodings", "json")
             for i in range(50)]
    order = corpus.shuffled(paths, 1234)
    assert sorted(order) == sorted(paths) and order != paths
    assert corpus.shuffled(list(reversed(paths)), 1234) == order   # input order is irrelevant
    assert corpus.shuffled(paths, 1) != order
    # a file missing on another machine does not move the others
    assert corpus.shuffled(paths[1:], 1234) == [p for p in order if p != paths[0]]
    # the last 10% (a validation split) draws from every folder, not from one
    tail = order[-len(order) // 10:]
    assert {p.split("/")[0] for p in tail} == {"asyncio", "email", "encodings", "json"}


def test_huge_files_are_left_out(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    (root / "small.py").write_text("x = 1\n")
    (root / "table.py").write_text("T = " + repr("word " * 60_000) + "\n")   # ~300 KB
    out = str(tmp_path / "c.jsonl")
    s = corpus.write_corpus(out, root=str(root))
    assert [d["path"] for d in _read(out)] == ["small.py"] and s["skipped_too_big"] == 1
    corpus.main(["--output", out, "--root", str(root), "--max-file-bytes", "0"])
    assert sorted(d["path"] for d in _read(out)) == ["small.py", "table.py"]
