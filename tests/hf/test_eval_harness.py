"""tasks/eval_harness.py runs lm-eval 0.4 on our checkpoint: four local tasks (multiple
choice, LAMBADA-style last word, rolling perplexity, greedy generation) give the scores a
brute-force, one-sequence-at-a-time scoring of the same model gives."""
from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch

from tests.hf.helpers import corpus, make_bpe, save_tiny

lm_eval = pytest.importorskip("lm_eval")

MAX_LEN = 16
TASKS = {
    "tiny_mc": """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
""",
    "tiny_lambada": """output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' ' + text.split(' ')[-1]}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "tiny_rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
""",
    "tiny_gen": """output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{target}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 5
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


def _docs() -> dict[str, list[dict]]:
    lines = corpus(24, seed=5)
    mc = [{"question": lines[i][:-1], "choices": ["cat", "dog", "park", "trees"],
           "answer": i % 4} for i in range(6)]
    lam = [{"text": lines[6 + i][:-1]} for i in range(6)]
    rolling = [{"text": " ".join(lines[12 + 3 * i:15 + 3 * i])} for i in range(3)]
    gen = [{"prompt": lines[21 + i].split(" ")[0], "target": " " + lines[21 + i].split(" ")[1]}
           for i in range(3)]
    return {"tiny_mc": mc, "tiny_lambada": lam, "tiny_rolling": rolling, "tiny_gen": gen}


def _write_tasks(folder) -> None:
    for name, docs in _docs().items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        header = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                  f"    test: {data}\ntest_split: test\n")
        (folder / f"{name}.yaml").write_text(header + TASKS[name])


class BruteForce:
    """Scores one sequence at a time with our model: no batching, no padding, no lm-eval."""

    def __init__(self, model, tokenizer, vocab: int) -> None:
        self.model, self.tok, self.vocab = model, tokenizer, vocab

    def logp(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor([ids])
        with torch.no_grad():
            out = self.model(t, torch.arange(len(ids))[None], None)[0, :, :self.vocab]
        return torch.log_softmax(out, -1)   # [s, V]

    def continuation(self, context: str, continuation: str) -> tuple[float, bool]:
        whole, n = self.tok.tokenize(context + continuation), len(self.tok.tokenize(context))
        cut = max(0, len(whole) - (MAX_LEN + 1))    # keep the last MAX_LEN + 1 tokens
        whole, n = whole[cut:], n - cut
        lp = self.logp(whole[:-1])[n - 1:]
        target = torch.tensor(whole[n:])
        return lp.gather(-1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all())

    def rolling(self, text: str) -> float:
        ids, total = self.tok.tokenize(text), 0.0
        for start in range(0, len(ids), MAX_LEN):     # blocks of MAX_LEN predicted tokens
            end = min(start + MAX_LEN, len(ids))
            inp = ([self.tok.eod] + ids)[:end] if start == 0 else ids[end - MAX_LEN - 1:end - 1]
            lp = self.logp(inp)[-(end - start):]
            total += lp.gather(-1, torch.tensor(ids[start:end])[:, None]).sum().item()
        return total

    def greedy(self, prompt: str, steps: int, stop: str) -> str:
        ids = self.tok.tokenize(prompt)
        new: list[int] = []
        for _ in range(steps):
            nxt = int(self.logp(ids + new)[-1].argmax())
            if nxt == self.tok.eod:
                break
            new.append(nxt)
            if stop in self.tok.detokenize(new):
                break
        return self.tok.detokenize(new).split(stop)[0]


def _tiny_checkpoint(tmp_path, kind: str):
    """A tiny ``kind`` checkpoint (tests/hf/helpers.py KINDS) with a BPE tokenizer and the
    local tasks: (model, tokenizer, the harness's argv without the tasks)."""
    from megatron.tokenizer import build_tokenizer
    vocab_file, merge_file = make_bpe(str(tmp_path / "tok"))
    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    model, _ = save_tiny(kind, str(tmp_path / "ckpt"), seq_length=MAX_LEN,
                         max_position_embeddings=MAX_LEN, tokenizer_type="GPT2BPETokenizer",
                         vocab_file=vocab_file, merge_file=merge_file, vocab_size=None,
                         orig_vocab_size=tok.vocab_size, padded_vocab_size=304)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    _write_tasks(tasks)
    argv = ["--load", str(tmp_path / "ckpt"), "--include-path", str(tasks), "--batch-size",
            "4", "--log-samples", "--bootstrap-iters", "0"]
    return model, tok, argv


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory):
    """A tiny GPT checkpoint with a BPE tokenizer, the local tasks, and one
    single-process harness run over them: (folder, model, tokenizer, argv, results file)."""
    tmp_path = tmp_path_factory.mktemp("harness")
    # lm-eval's local tasks go through `datasets`: keep its cache out of the home folder
    # (the environment variable reaches the spawned ranks too)
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path / "datasets_cache")
    import datasets.config
    datasets.config.HF_DATASETS_CACHE = tmp_path / "datasets_cache"
    model, tok, argv = _tiny_checkpoint(tmp_path, "gpt_learned")
    from tasks import eval_harness
    argv = argv + ["--tasks", *TASKS]
    out = tmp_path / "results.json"
    eval_harness.main(argv + ["--output-path", str(out)])
    return tmp_path, model, tok, argv, out


def _check_mc(out, brute: "BruteForce") -> None:
    results, docs = json.load(open(out))["results"], _docs()
    mc = [[brute.continuation(d["question"], " " + c)[0] for c in d["choices"]]
          for d in docs["tiny_mc"]]
    acc = sum(max(range(4), key=lambda k: s[k]) == d["answer"]
              for s, d in zip(mc, docs["tiny_mc"])) / len(mc)
    assert results["tiny_mc"]["acc,none"] == pytest.approx(acc, abs=1e-12)
    samples = json.load(open(out))["samples"]["tiny_mc"]
    for sample in samples:
        expect = mc[sample["doc_id"]]
        got = [float(r[0][0]) for r in sample["resps"]]
        assert got == pytest.approx(expect, abs=1e-4)


def _check_lambada(out, brute: "BruteForce") -> None:
    results, docs = json.load(open(out))["results"], _docs()
    lam = [brute.continuation(" ".join(d["text"].split(" ")[:-1]), " " + d["text"].split(" ")[-1])
           for d in docs["tiny_lambada"]]
    assert results["tiny_lambada"]["acc,none"] == pytest.approx(
        sum(g for _, g in lam) / len(lam), abs=1e-12)
    assert results["tiny_lambada"]["perplexity,none"] == pytest.approx(
        math.exp(-sum(ll for ll, _ in lam) / len(lam)), rel=1e-5)


def _check_rolling(out, brute: "BruteForce", tok) -> None:
    results, docs = json.load(open(out))["results"], _docs()
    rolling = [brute.rolling(d["text"]) for d in docs["tiny_rolling"]]
    assert any(len(tok.tokenize(d["text"])) > 2 * MAX_LEN for d in docs["tiny_rolling"])
    words = sum(len(re.split(r"\s+", d["text"])) for d in docs["tiny_rolling"])
    assert results["tiny_rolling"]["word_perplexity,none"] == pytest.approx(
        math.exp(-sum(rolling) / words), rel=1e-5)


def _check_gen(out, brute: "BruteForce") -> None:
    results, docs = json.load(open(out))["results"], _docs()
    gens = [brute.greedy(d["prompt"], 5, ".") for d in docs["tiny_gen"]]
    got = {s["doc_id"]: s["resps"][0][0] for s in json.load(open(out))["samples"]["tiny_gen"]}
    assert [got[i] for i in range(len(gens))] == gens
    assert results["tiny_gen"]["exact_match,none"] == pytest.approx(
        sum(g == d["target"] for g, d in zip(gens, docs["tiny_gen"])) / len(gens))


def test_harness_equals_brute_force_scoring(harness_run):
    _, model, tok, _, out = harness_run
    brute = BruteForce(model, tok, tok.vocab_size)
    _check_mc(out, brute)
    _check_lambada(out, brute)
    _check_rolling(out, brute, tok)
    _check_gen(out, brute)


def test_harness_on_a_llama_model_equals_brute_force_scoring(harness_run, tmp_path):
    """The Llama shape (RMSNorm, grouped-query attention, SwiGLU, no biases, scaled rotary,
    untied): multiple choice and greedy generation score as the brute-force scorer does."""
    from tasks import eval_harness
    model, tok, argv = _tiny_checkpoint(tmp_path, "llama")
    assert model.config.normalization == "RMSNorm" and model.config.num_query_groups == 2
    out = tmp_path / "results.json"
    eval_harness.main(argv + ["--tasks", "tiny_mc", "tiny_gen", "--output-path", str(out)])
    brute = BruteForce(model, tok, tok.vocab_size)
    _check_mc(out, brute)
    _check_gen(out, brute)


def _harness_worker(rank: int, world_size: int, argv: list[str]) -> dict:
    from tasks import eval_harness
    results = eval_harness.main(argv)["results"]
    return {task: {k: v for k, v in r.items() if isinstance(v, float)}
            for task, r in results.items()}


def test_harness_under_tp2_pp2_equals_single_process(harness_run):
    """torchrun-style TP2 x PP2 (4 gloo ranks): the pipeline forward with TP-gathered
    logits gives every rank the single-process scores."""
    from tests.dist_utils import run_distributed
    folder, _, _, argv, out = harness_run
    argv = [a for a in argv if a not in ("tiny_lambada", "tiny_rolling")]  # keep it short
    per_rank = run_distributed(_harness_worker, 4, argv + [
        "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
        "--output-path", str(folder / "tp2pp2.json")], timeout_s=400, pg_timeout_s=300)
    single = json.load(open(out))["results"]
    for results in per_rank:
        assert sorted(results) == ["tiny_gen", "tiny_mc"]
        for task, metrics in results.items():
            for key, value in metrics.items():
                assert value == pytest.approx(single[task][key], rel=1e-5, abs=1e-9), (task, key)
    assert json.load(open(folder / "tp2pp2.json"))["results"].keys() == per_rank[0].keys()
