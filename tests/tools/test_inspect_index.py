"""tools/inspect_index.py on a slice of the default corpus: quantiles of real samples, a PNG
histogram, and the easiest / hardest documents decoded with the corpus's tokenizer."""
import numpy as np
import pytest

from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.data_efficiency.analyzer.index_io import MetricIndex
from megatron.errors import BadInputError
from megatron.tokenizer import build_tokenizer

from tests.tools.tool_loader import load_tool

corpus, trainer, prep, inspect_index = (load_tool(n) for n in (
    "prepare_default_corpus", "train_tokenizer", "preprocess_data", "inspect_index"))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    corpus.write_corpus(str(d / "c.jsonl"), max_files=12)
    assert trainer.main(["--input", str(d / "c.jsonl"), "--model-prefix", str(d / "sp"),
                         "--vocab-size", "500"]) == 0
    prep.main(["--input", str(d / "c.jsonl"), "--output-prefix", str(d / "c"),
               "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model",
               str(d / "sp.model"), "--append-eod"])
    prefix = str(d / "c_text_document")
    run_analyzer(AnalyzerConfig(data_prefix=prefix, save_path=str(d / "idx"),
                                metrics=("total_vocab_freq", "voc"), progress=False))
    return d, prefix, str(d / "idx" / "voc")


def test_quantiles_png_and_decoded_extremes(indexed, capsys):
    d, prefix, index = indexed
    png = str(d / "voc.png")
    assert inspect_index.main([index, "--png", png, "--show", "2", "--max-chars", "10000000",
                               "--data-path", prefix, "--tokenizer-type",
                               "GPTSentencePieceTokenizer", "--tokenizer-model",
                               str(d / "sp.model")]) == 0
    out = capsys.readouterr().out
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    vals = np.sort(np.asarray(MetricIndex.open(index).sample_to_metric))
    for q in (0, 50, 100):
        assert f"q{q}\t{vals[int(np.floor(q / 100 * (len(vals) - 1)))]:.6g}" in out
    assert f"mean\t{vals.mean():.6g}" in out
    tok = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=str(d / "sp.model"))
    ds = MMapIndexedDataset(prefix)
    s2m = np.asarray(MetricIndex.open(index).sample_to_metric)
    easiest, hardest = int(np.argmin(s2m)), int(np.argmax(s2m))
    assert f"easiest #1: sample {easiest}," in out and f"hardest #1: sample {hardest}," in out
    text = tok.detokenize(ds[int(ds.doc_idx[hardest])].tolist())
    assert text and text in out


def test_index_of_other_data_is_refused(indexed, tmp_path):
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
    _, _, index = indexed
    b = MMapIndexedDatasetBuilder(str(tmp_path / "o.bin"), dtype=np.uint16)
    b.add_document(np.arange(9), [9])
    b.finalize(str(tmp_path / "o.idx"))
    with pytest.raises(BadInputError, match="fingerprint"):
        inspect_index.main([index, "--data-path", str(tmp_path / "o")])
