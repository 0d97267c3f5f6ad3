"""pretrain_gpt.py with curriculum learning and random-LTD, end to end on a token store
indexed by the analyzer: every curriculum variant runs, tokens are counted as DESIGN
section 3 says, TensorBoard shows the curves, and a resumed run reproduces the
uninterrupted one exactly (same sample ids, same token drops, same losses)."""
import numpy as np
import pytest

import pretrain_gpt
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.data_efficiency.token_accounting import tokens_per_step
from megatron.training import pretrain

VOCAB, SEQ, GBS, ITERS, LAYERS, SEED = 64, 32, 4, 6, 4, 11


@pytest.fixture(scope="module")
def indexed_corpus(tmp_path_factory):
    """Zipf-distributed documents in the token store + the analyzer's voc index over the
    training samples that the runs below draw."""
    root = tmp_path_factory.mktemp("de_corpus")
    prefix = str(root / "corpus")
    rng = np.random.default_rng(0)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(300):
        doc = np.minimum(rng.zipf(1.3, size=int(rng.integers(5, 80))), VOCAB - 2)
        builder.add_item(np.append(doc, VOCAB - 1))          # EOD is the last id
        builder.end_document()
    builder.finalize(prefix + ".idx")
    run_analyzer(AnalyzerConfig(data_prefix=prefix, save_path=str(root / "index"),
                                metrics=("total_vocab_freq", "voc"), granularity="sample",
                                split="90,10,0", seq_length=SEQ, seed=SEED,
                                train_samples=ITERS * GBS, progress=False))
    return prefix, str(root / "index" / "voc")


def _flags(prefix, *extra, iters=ITERS):
    return ["--num-layers", str(LAYERS), "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
            "--position-embedding-type", "rope", "--micro-batch-size", "2",
            "--global-batch-size", str(GBS), "--train-iters", str(iters), "--lr", "3e-3",
            "--min-lr", "3e-4", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
            "--vocab-size", str(VOCAB), "--make-vocab-size-divisible-by", "8",
            "--data-path", prefix, "--split", "90,10,0", "--seed", str(SEED),
            "--num-workers", "0", "--log-interval", "1", "--eval-interval", "100",
            "--eval-iters", "1", *extra]


def _curriculum(kind, index):
    seq = ["--curriculum-min-difficulty", "8", "--curriculum-max-difficulty", str(SEQ),
           "--curriculum-schedule-type", "fixed_linear", "--curriculum-total-steps", "4",
           "--curriculum-difficulty-step", "8"]
    voc = ["--curriculum-index-path", index, "--curriculum-difficulty-type", "percentile",
           "--curriculum-min-difficulty", "10", "--curriculum-max-difficulty", "100",
           "--curriculum-schedule-type", "fixed_root", "--curriculum-total-steps", "4",
           "--curriculum-difficulty-step", "1", "--curriculum-root-degree", "2"]
    if kind in ("seqtru", "seqres"):
        return ["--data-efficiency-curriculum-learning", "--curriculum-metric", kind, *seq]
    if kind == "voc":
        return ["--data-efficiency-curriculum-learning", "--curriculum-metric", "voc", *voc]
    both = ["--curriculum-metric", kind.split("_")[0], "voc", "--curriculum-index-path", index,
            "--curriculum-difficulty-type", "value", "percentile",
            "--curriculum-min-difficulty", "8", "10", "--curriculum-max-difficulty", str(SEQ),
            "100", "--curriculum-schedule-type", "fixed_linear", "fixed_root",
            "--curriculum-total-steps", "4", "--curriculum-difficulty-step", "8", "1",
            "--curriculum-root-degree", "1", "2"]
    return ["--data-efficiency-curriculum-learning", *both]


LTD = ["--random-ltd", "--random-ltd-min-seqlen", "8", "--random-ltd-total-steps", "4",
       "--random-ltd-seq-per-step", "8"]


def _run(prefix, *extra, iters=ITERS):
    return pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                    pretrain_gpt.forward_step, argv=_flags(prefix, *extra, iters=iters))


@pytest.mark.parametrize("kind", ["seqtru", "seqres", "voc", "seqtru_voc", "seqres_voc"])
def test_every_curriculum_trains_and_counts_its_tokens(indexed_corpus, kind):
    prefix, index = indexed_corpus
    state = _run(prefix, *_curriculum(kind, index), *LTD)
    losses = [loss for _, loss in state.history]
    assert len(losses) == ITERS and all(np.isfinite(losses))
    # Pacing over 4 steps from 8 to 32 in steps of 8 (DeepSpeed's 1-based steps):
    # 14 -> 8, 20 -> 16, 26 -> 24, 32, then 32. The kept length of the 2 middle layers
    # follows the same numbers (8 -> 32 over 4 steps, counted from 0).
    seqs = [8, 16, 24, 32, 32, 32] if kind != "voc" else [SEQ] * ITERS
    kept = [8, 14 // 8 * 8, 20 // 8 * 8, 26 // 8 * 8, 32, 32]
    expect = 0
    for s, r in zip(seqs, kept):
        rows = GBS * (SEQ // s) if kind.startswith("seqres") else GBS
        expect += tokens_per_step(rows, s, LAYERS, LAYERS - 2, min(r, s))
    assert state.consumed_tokens == expect


@pytest.mark.parametrize("workers", ["0", "1"])   # 1: a loader that prefetches ahead
def test_resume_reproduces_ids_drops_and_losses(indexed_corpus, tmp_path, workers):
    prefix, index = indexed_corpus
    flags = [*_curriculum("seqtru_voc", index), *LTD, "--hidden-dropout", "0.1",
             "--num-workers", workers]
    straight = _run(prefix, *flags)
    save = str(tmp_path / "ckpt")
    first = _run(prefix, *flags, "--save", save, "--save-interval", "3", "--exit-interval", "3")
    assert first.iteration == 3
    resumed = _run(prefix, *flags, "--load", save, "--save", save, "--save-interval", "100")
    assert resumed.iteration == ITERS and resumed.consumed_tokens == straight.consumed_tokens
    assert [loss for _, loss in resumed.history] == [loss for _, loss in straight.history[3:]]


def test_tensorboard_shows_curriculum_and_random_ltd(indexed_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    prefix, index = indexed_corpus
    tb = str(tmp_path / "tb")
    _run(prefix, *_curriculum("seqtru_voc", index), *LTD, "--tensorboard-dir", tb, iters=3)
    acc = EventAccumulator(tb, size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("curriculum/voc", "curriculum/seqtru", "seqlen/curriculum_seqlen",
                "seqlen/actual_seq_length", "seqlen/random_ltd_reserved_length",
                "consumed-tokens", "steps-vs-tokens", "lm loss"):
        assert tag in tags, (tag, sorted(tags))
    assert [e.value for e in acc.Scalars("seqlen/curriculum_seqlen")] == [8, 16, 24]
    assert "curriculum/voc_sampled" in acc.Tags()["histograms"]


def test_index_for_other_samples_is_refused(indexed_corpus):
    """Another seed shuffles the samples differently: the index no longer describes them.
    (A different --train-iters that leaves the sample maps unchanged is accepted: the
    tensorboard test above trains 3 steps on the 6-step index.)"""
    prefix, index = indexed_corpus
    flags = _flags(prefix, *_curriculum("voc", index))
    flags[flags.index("--seed") + 1] = str(SEED + 1)
    with pytest.raises(ValueError, match="fingerprint"):
        pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                 pretrain_gpt.forward_step, argv=flags)


def test_deepspeed_json_config_drives_random_ltd_and_conflicts_with_flags(indexed_corpus,
                                                                         tmp_path):
    """A Megatron-DeepSpeed user's data_efficiency JSON works unchanged; the same setting
    also given by flags is refused, naming both places."""
    import json
    prefix, _ = indexed_corpus
    config = tmp_path / "ds_config.json"
    config.write_text(json.dumps({"train_batch_size": GBS, "data_efficiency": {
        "enabled": True, "seed": SEED, "data_routing": {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": LAYERS, "random_ltd_layer_num": 2,
            "random_ltd_layer_id": [1, 2], "model_mask_name": "attention_mask",
            "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
            "random_ltd_schedule": {"min_value": 8, "max_value": SEQ,
                                    "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": 4,
                                                        "seq_per_step": 8}}}}}}))
    state = _run(prefix, "--data-efficiency-config", str(config))
    kept = [8, 14 // 8 * 8, 20 // 8 * 8, 26 // 8 * 8, 32, 32]
    assert state.consumed_tokens == sum(tokens_per_step(GBS, SEQ, LAYERS, 2, r) for r in kept)
    with pytest.raises(ValueError, match="give it in one place"):
        _run(prefix, "--data-efficiency-config", str(config), *LTD)
