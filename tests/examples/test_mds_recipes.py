"""examples/mds: the Megatron-DeepSpeed recipes generate the ds_config their flags point at,
it is read as this codebase's data-efficiency config, and each recipe trains for a few steps
on CPU with every flag and the JSON as generated (model, batch and run shrunk through the
recipe's environment variables) on a tiny store with a DeepSpeed-format analyzer index."""
import os
import subprocess

import numpy as np
import pytest

from megatron.data_efficiency.analyzer.index_io import write_metric_index
from megatron.data_efficiency.config import load_config_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _dry_run(script: str, tmp_path, **env) -> list[str]:
    env = {**os.environ, "PRINT_COMMAND": "1", "OUTPUT_HOME": str(tmp_path / "out"), **env}
    out = subprocess.run(["bash", os.path.join(ROOT, "examples", "mds", script)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.mark.parametrize("script,model,seq", [("pretrain_gpt_1.3B_cl_seqtru_voc_ltd.sh", "gpt", 64),
                                              ("pretrain_bert_336M_cl_seqtru_voc_ltd.sh", "bert", 32)])
def test_generated_ds_config_is_read(tmp_path, script, model, seq):
    index = str(tmp_path / "index" / "voc")
    write_metric_index(index, "voc", np.arange(20), None)
    argv = _dry_run(script, tmp_path, NUM_LAYERS="4", SEQ_LEN=str(seq), GLOBAL_BATCH_SIZE="8",
                    NPROC_PER_NODE="2", LTD_START="16", CL_2nd_MIN="24",
                    CL_1st_SAMPLE_PATH=index, CL_1st_METRIC_PATH=index)
    assert argv[1:3] == ["-m", "torch.distributed.run"]               # torchrun of .venv
    assert argv[7].endswith(f"pretrain_{model}.py")
    assert argv[argv.index("--num-layers") + 1] == "4"
    assert argv[argv.index("--micro-batch-size") + 1] == "4"      # 8 / (2 ranks)
    cfg = load_config_file(argv[argv.index("--deepspeed_config") + 1], seq_length=seq)
    assert cfg.enabled and cfg.seed == 1234
    ltd = cfg.random_ltd
    assert ltd.enabled and ltd.layer_ids == (1, 2) and ltd.max_seqlen == seq
    assert ltd.min_seqlen == 16 and ltd.seq_per_step == 16
    voc, seqtru = cfg.curriculum.metrics
    assert (voc.name, voc.difficulty_type, voc.index_path) == ("voc", "percentile", index)
    assert voc.schedule.schedule_type == "fixed_root" and voc.schedule.root_degree == 2
    assert (seqtru.kind, seqtru.schedule.max_difficulty) == ("seqtru", seq)
    assert seqtru.schedule.min_difficulty == 24 and seqtru.schedule.difficulty_step == 8


# -- the recipes run: every flag and the JSON as generated, the model and the run shrunk -----

import json  # noqa: E402
import re  # noqa: E402

from megatron.data.dataset_utils import get_train_valid_test_split_  # noqa: E402
from megatron.data.indexed_dataset import MMapIndexedDataset  # noqa: E402
from megatron.data_efficiency.analyzer import deepspeed_index as dsi  # noqa: E402
from megatron.tokenizer.gpt2_tokenization import bytes_to_unicode  # noqa: E402
from tests.examples.fresh_clone import no_python_env  # noqa: E402
from tools import build_wordpiece_vocab, prepare_default_corpus, preprocess_data  # noqa: E402

SPLIT = "949,50,1"       # both recipes' --split
SEED = 1234              # both recipes' --seed


def _write_deepspeed_voc(folder: str, values: np.ndarray) -> tuple[str, str]:
    """A DeepSpeed DataAnalyzer index of per-sample ``values`` in its file layout (rows of
    sample ids per distinct value, DeepSpeed's dtype codes, the percentile-merged file the
    GPT recipe names); returns the recipe's (index_to_sample, index_to_metric) paths."""
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, "vocab_rarity")
    uniq = np.unique(values)
    rows = [np.flatnonzero(values == v) for v in uniq]
    ids = dsi.fit_int_dtype(0, len(values) - 1)
    dsi.write_deepspeed_rows(prefix + dsi.SAMPLE_SUFFIX, rows, ids)
    dsi.write_deepspeed_rows(prefix + dsi.MERGED_SUFFIX, np.array_split(np.concatenate(rows), 10),
                             ids)
    dsi.write_deepspeed_rows(prefix + dsi.METRIC_SUFFIX, [[v] for v in uniq],
                             dsi.fit_int_dtype(int(uniq.min()), int(uniq.max())))
    return prefix + dsi.MERGED_SUFFIX, prefix + dsi.METRIC_SUFFIX


def _rarity(texts: list[np.ndarray]) -> np.ndarray:
    """Megatron-DeepSpeed's vocab rarity shape: an integer per sample (rarer tokens: higher)."""
    counts = np.bincount(np.concatenate(texts)) + 1
    return np.array([int(-np.log(counts[t] / counts.sum()).sum() * 100) for t in texts])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """400 short documents of 3-8 sentences, words drawn from the default corpus (CPython
    standard library) with Zipf-like frequencies: a tiny store either recipe can split."""
    d = tmp_path_factory.mktemp("mds_corpus")
    source = str(d / "stdlib.jsonl")
    prepare_default_corpus.write_corpus(source, max_bytes=100_000, skip_tests=True)
    with open(source) as f:
        text = " ".join(json.loads(line)["text"] for line in f)
    words = sorted(set(re.findall(r"[a-z]{2,9}", text)))[:600]
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, len(words) + 1)
    path = str(d / "corpus.jsonl")
    with open(path, "w") as f:
        for _ in range(400):
            sentences = [" ".join(rng.choice(words, int(rng.integers(4, 14)), p=p / p.sum()))
                         .capitalize() + "." for _ in range(int(rng.integers(3, 9)))]
            f.write(json.dumps({"text": " ".join(sentences)}) + "\n")
    return path


def _gpt2_files(d) -> tuple[str, str]:
    merges = [("Ġ", "t"), ("e", "r"), ("i", "n"), ("Ġ", "a"), ("r", "e"), ("o", "n")]
    symbols = list(bytes_to_unicode().values()) + [a + b for a, b in merges] + ["<|endoftext|>"]
    (d / "gpt2-vocab.json").write_text(json.dumps({s: i for i, s in enumerate(dict.fromkeys(symbols))}))
    (d / "gpt2-merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return str(d / "gpt2-vocab.json"), str(d / "gpt2-merges.txt")


def _launch(script: str, out_dir, env: dict) -> subprocess.CompletedProcess:
    """Run a recipe for real (torchrun, one CPU rank), shrunk through its environment
    variables: model, batch, run length, schedules' lengths, logging cadence."""
    env = {**no_python_env(str(out_dir)),                    # the recipe finds .venv itself
           "OUTPUT_HOME": str(out_dir), "OMP_NUM_THREADS": "1",
           "NPROC_PER_NODE": "1", "NUM_LAYERS": "4", "HIDDEN_SIZE": "32", "NUM_ATTN_HEADS": "2",
           "GLOBAL_BATCH_SIZE": "4", "MICRO_BATCH_SIZE": "2", "LOG_INTERVAL": "1",
           "EVAL_ITERS": "1", "EVAL_INTERVAL": "2", "SAVE_INTERVAL": "1000", "LTD_START": "16",
           "LTD_STEP": "4", "CL_TOTAL_STEP": "4", "CL_2nd_MIN": "16", **env}
    return subprocess.run(["bash", os.path.join(ROOT, "examples", "mds", script)], env=env,
                          capture_output=True, text=True, timeout=600)


def _run_recipe(script: str, tmp_path, env: dict) -> str:
    proc = _launch(script, tmp_path / "out", env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(l for l in out.splitlines() if "error" in l.lower())[-3000:]
    return out


def _iterations(out: str) -> list[int]:
    return [int(m) for m in re.findall(r" iteration\s+(\d+)/", out)]


def _tags(tb_dir: str) -> set:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(tb_dir)
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_gpt_recipe_trains_on_cpu(tmp_path, corpus):
    from megatron.data.gpt_dataset import build_index_maps
    vocab, merges = _gpt2_files(tmp_path)
    prefix = str(tmp_path / "pile")
    assert preprocess_data.main(["--input", corpus, "--output-prefix", prefix, "--tokenizer-type",
                                 "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merges,
                                 "--append-eod", "--log-interval", "0"]) == 0
    data, seq = prefix + "_text_document", 32
    store = MMapIndexedDataset(data)
    lo, hi = get_train_valid_test_split_(SPLIT, len(store.sizes))[:2]
    documents = np.arange(lo, hi, dtype=np.int32)
    # the analyzer's one-epoch sample maps (Megatron-DeepSpeed's exact1ep files)
    maps = build_index_maps(documents, store.sizes, 1, seq, SEED)
    names = {}
    for name, array in zip(("DOC_IDX_PATH", "SAMPLE_IDX_PATH", "SHUFFLE_IDX_PATH"), maps):
        names[name] = str(tmp_path / f"pile_train_indexmap_exact1ep_{seq}sl_{SEED}s_{name}.npy")
        np.save(names[name], array)
    doc_idx, sample_idx, shuffle_idx = maps
    texts = []
    for i in shuffle_idx:   # the samples the loaded maps number (one document each is enough
        (d0, o0), (d1, o1) = sample_idx[i], sample_idx[i + 1]   # for the metric's purpose)
        texts.append(store.get(int(doc_idx[d0]), offset=int(o0))[:seq + 1])
    n = len(shuffle_idx)
    assert n > 40
    sample_path, metric_path = _write_deepspeed_voc(str(tmp_path / "analysis"), _rarity(texts))
    env = {"SEQ_LEN": str(seq), "TRAIN_TOKENS": str(5 * 4 * seq), "TRAIN_SAMPLES": str(6 * 4),
           "LR_WARMUP_TOKENS": str(4 * seq), "DATA_PATH": data, "VOCAB_FILE": vocab,
           "MERGE_FILE": merges, "CL_1st_SAMPLE_PATH": sample_path,
           "CL_1st_METRIC_PATH": metric_path, **names}
    out = _run_recipe("pretrain_gpt_1.3B_cl_seqtru_voc_ltd.sh", tmp_path, env)
    its = _iterations(out)
    # two stop conditions: 6 steps of samples; 5 full-length steps of tokens, which the
    # curriculum's shorter early sequences stretch past 6 steps, so --train-samples wins
    assert its[-1] == 6 and "iteration        6/       6" in out, out[-3000:]
    assert "loaded the train index maps" in out
    assert "validation loss at iteration 2" in out
    ckpt = tmp_path / "out" / "checkpoint" / "gpt_1.3B_cl_seqtru_voc_ltd_seed1234"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "6"
    tags = _tags(str(tmp_path / "out" / "tensorboard" / "gpt_1.3B_cl_seqtru_voc_ltd_seed1234"))
    for tag in ("batch-size", "iteration-time", "lm loss validation ppl",
                "optimizer/variance_l2 vs tokens", "curriculum/voc",
                "seqlen/random_ltd_reserved_length"):
        assert tag in tags, tag
    # the DeepSpeed index must describe exactly the loaded maps' samples
    _write_deepspeed_voc(str(tmp_path / "analysis"), _rarity(texts[:-1]))
    proc = _launch("pretrain_gpt_1.3B_cl_seqtru_voc_ltd.sh", tmp_path / "out2", env)
    assert proc.returncode != 0
    assert f"the index describes {n - 1} samples but the training dataset has {n}" in \
        proc.stdout + proc.stderr


def test_bert_recipe_trains_on_cpu(tmp_path, corpus):
    from megatron.data.bert_dataset import build_samples_mapping
    vocab = str(tmp_path / "bert-large-uncased-vocab.txt")
    assert build_wordpiece_vocab.main(["--input", corpus, "--output", vocab,
                                       "--vocab-size", "1200"]) == 0
    prefix = str(tmp_path / "pile_bert_train")
    assert preprocess_data.main(["--input", corpus, "--output-prefix", prefix, "--tokenizer-type",
                                 "BertWordPieceLowerCase", "--vocab-file", vocab,
                                 "--split-sentences", "--log-interval", "0"]) == 0
    data, seq = prefix + "_text_sentence", 32
    store = MMapIndexedDataset(data)
    lo, hi = get_train_valid_test_split_(SPLIT, store.num_documents)[:2]
    # the analyzer's samples mapping (Megatron-DeepSpeed's exact5ep file), 0.10 short seqs
    mapping = build_samples_mapping(store.doc_idx[lo:hi + 1], store.sizes, 1, seq - 3, 0.1,
                                    SEED, True)
    mapping_path = str(tmp_path / f"pile_bert_train_indexmap_exact1ep_{seq - 3}msl_0.10ssp_{SEED}s.npy")
    np.save(mapping_path, mapping)
    texts = [np.concatenate([store[i] for i in range(a, b)]) for a, b, _ in mapping]
    sample_path, metric_path = _write_deepspeed_voc(str(tmp_path / "analysis"), _rarity(texts))
    env = {"SEQ_LEN": str(seq), "TRAIN_ITERS": "8", "TRAIN_ITERS_OF_TOKENS": "4",
           "LR_WARMUP_ITERS": "1", "DATA_PATH": data, "VOCAB_FILE": vocab,
           "TRAIN_IDX_PATH": mapping_path, "CL_1st_SAMPLE_PATH": sample_path,
           "CL_1st_METRIC_PATH": metric_path}
    out = _run_recipe("pretrain_bert_336M_cl_seqtru_voc_ltd.sh", tmp_path, env)
    its = _iterations(out)
    # --train-iters 8 and --train-tokens = 4 full-length steps (512): the curriculum's
    # shorter early sequences (64, 80, 80, 96, 128, 128 tokens) reach 512 at step 6 first
    assert its[-1] == 6 and "iteration        6/       6" in out, out[-3000:]
    assert "loaded the train BERT samples mapping" in out
    assert "sop loss" in out
    tags = _tags(str(tmp_path / "out" / "tensorboard" / "bert_336M_cl_seqtru_voc_ltd_seed1234"))
    for tag in ("batch-size", "iteration-time", "lm loss validation ppl",
                "optimizer/momentum_l2 vs tokens", "curriculum/voc"):
        assert tag in tags, tag
