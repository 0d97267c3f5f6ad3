"""examples/finetune_gpt2_cl_ltd.sh on CPU: a tiny randomly initialised GPT-2 made with
transformers is imported, finetuned with CL seqres + random-LTD (both visibly active: fewer
tokens consumed than full batches), its validation perplexity falls below the imported
model's, and the result exports back to a transformers model."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.hf.helpers import corpus, make_tiny_gpt2

pytest.importorskip("transformers")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
SEQ, ITERS, GBS = 64, 30, 8
_VALID = re.compile(r"validation loss at iteration (\d+) \| lm loss value: (\S+) \| "
                    r"lm loss PPL: (\S+)")
_TOKENS = re.compile(r"iteration\s+(\d+)/\s*\d+ \| consumed samples:\s+\d+ \| "
                     r"consumed tokens:\s+(\d+)")


@pytest.mark.slow
def test_finetune_example_lowers_validation_perplexity(tmp_path):
    from tests.examples.fresh_clone import no_python_env
    hf = make_tiny_gpt2(str(tmp_path / "gpt2"), positions=SEQ)
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": line}) + "\n" for line in corpus(2000, 9)))
    env = {**no_python_env(str(tmp_path)), "HF_MODEL": hf, "DATA_JSONL": str(data),
           "OUT": str(tmp_path / "out"), "SEQ": str(SEQ), "TRAIN_ITERS": str(ITERS),
           "MBS": "4", "GBS": str(GBS), "LR": "1e-3", "MIN_LR": "1e-4", "EVAL_INTERVAL": "10",
           "EVAL_ITERS": "4", "CL_MIN": "16", "LTD_MIN": "16", "LTD_STEP": "8",
           "SPLIT": "90,10,0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(["bash", os.path.join(ROOT, "examples", "finetune_gpt2_cl_ltd.sh")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    baseline = _VALID.findall(open(tmp_path / "out" / "baseline.log").read())
    finetune = _VALID.findall(open(tmp_path / "out" / "finetune.log").read())
    assert [int(i) for i, _, _ in baseline] == [0]
    assert [int(i) for i, _, _ in finetune] == [10, 20, 30]
    ppl = [float(p) for _, _, p in baseline + finetune]
    assert ppl[-1] < 0.8 * ppl[0], ppl
    assert ppl == sorted(ppl, reverse=True), ppl
    # seqres starts at 16 tokens per row and random-LTD keeps 16 of them in the middle
    # layers: the first steps consume fewer tokens than GBS x SEQ
    tokens = {int(i): int(t) for i, t in _TOKENS.findall(
        open(tmp_path / "out" / "finetune.log").read())}
    assert tokens[10] < 10 * GBS * SEQ and tokens[ITERS] < ITERS * GBS * SEQ
    import transformers
    again = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out" / "hf"))
    assert again.config.vocab_size == 300
    # the finished export is kept: a rerun stops at once (examples/_hf_export.sh)
    rerun = subprocess.run(["bash", os.path.join(ROOT, "examples", "finetune_gpt2_cl_ltd.sh")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 2 and "REPLACE_EXPORT=1" in rerun.stderr
    assert os.path.isfile(tmp_path / "out" / "hf" / "model.safetensors")
