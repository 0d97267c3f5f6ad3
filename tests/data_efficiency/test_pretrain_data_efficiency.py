"""pretrain_gpt.py with curriculum learning and random-LTD, end to end on a token store
indexed by the analyzer: every curriculum variant runs, on the GPT-shaped and the
Llama-shaped model, tokens are counted as DESIGN section 3 says, TensorBoard shows the
curves, and a resumed run reproduces the uninterrupted one exactly (same sample ids, same
token drops, same losses; on the Llama shape for every curriculum metric)."""
import numpy as np
import torch
import pytest

from megatron.core.enums import ModelType
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


def _flags(prefix, *extra, iters=ITERS, workers="0"):
    """``workers=None`` leaves --num-workers at its default (2: a prefetching loader)."""
    loader = [] if workers is None else ["--num-workers", workers]
    return ["--num-layers", str(LAYERS), "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
            "--position-embedding-type", "rope", "--micro-batch-size", "2",
            "--global-batch-size", str(GBS), "--train-iters", str(iters), "--lr", "3e-3",
            "--min-lr", "3e-4", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
            "--vocab-size", str(VOCAB), "--make-vocab-size-divisible-by", "8",
            "--data-path", prefix, "--split", "90,10,0", "--seed", str(SEED),
            *loader, "--log-interval", "1", "--eval-interval", "100",
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
# Megatron-DeepSpeed's Llama-2 model flags (one query group for the 2 heads)
LLAMA = ["--normalization", "rmsnorm", "--num-key-value-heads", "1", "--swiglu",
         "--disable-bias-linear", "--untie-embeddings-and-output-weights",
         "--use-rotary-position-embeddings", "--no-position-embedding", "--rotary-base",
         "500000", "--use-rope-scaling", "--no-query-key-layer-scaling"]
SHAPES = {"gpt": [], "llama": LLAMA}
CURRICULA = ["seqtru", "seqres", "voc", "seqtru_voc", "seqres_voc"]


def _run(prefix, *extra, iters=ITERS, workers="0", forward_step=pretrain_gpt.forward_step):
    return pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                    ModelType.encoder_or_decoder, forward_step,
                    argv=_flags(prefix, *extra, iters=iters, workers=workers))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kind", CURRICULA)
def test_every_curriculum_trains_and_counts_its_tokens(indexed_corpus, kind, shape):
    prefix, index = indexed_corpus
    state = _run(prefix, *_curriculum(kind, index), *LTD, *SHAPES[shape])
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


@pytest.mark.parametrize("workers", ["0", None])   # None: the default, 2 prefetching workers
def test_resume_reproduces_ids_drops_and_losses(indexed_corpus, tmp_path, workers):
    prefix, index = indexed_corpus
    flags = [*_curriculum("seqtru_voc", index), *LTD, "--hidden-dropout", "0.1"]
    straight = _run(prefix, *flags, workers=workers)
    save = str(tmp_path / "ckpt")
    first = _run(prefix, *flags, "--save", save, "--save-interval", "3", "--exit-interval", "3",
                 workers=workers)
    assert first.iteration == 3
    resumed = _run(prefix, *flags, "--load", save, "--save", save, "--save-interval", "100",
                   workers=workers)
    assert resumed.iteration == ITERS and resumed.consumed_tokens == straight.consumed_tokens
    assert [loss for _, loss in resumed.history] == [loss for _, loss in straight.history[3:]]


def _llama_checked(seen: list):
    """``forward_step`` that records whether the model trained is Llama-shaped: RMSNorm,
    2 heads in 1 query group ([q q k v] x 16 rows), no bias, no position table."""
    from megatron.checkpointing import unwrap_model
    from megatron.model.norms import RMSNorm

    def forward_step(data_iterator, model):
        if not seen:
            gpt = unwrap_model(model)
            qkv = gpt.transformer.layers[0].self_attention.query_key_value.weight
            seen.append(isinstance(gpt.transformer.final_layernorm, RMSNorm)
                        and qkv.shape[0] == 4 * 16 and gpt.embedding.position_embeddings is None
                        and not [n for n, _ in gpt.named_parameters() if "bias" in n])
        return pretrain_gpt.forward_step(data_iterator, model)
    return forward_step


@pytest.mark.parametrize("kind", CURRICULA)
def test_llama_resumes_every_curriculum_with_random_ltd_exactly(indexed_corpus, tmp_path, kind):
    prefix, index = indexed_corpus
    flags = [*_curriculum(kind, index), *LTD, *LLAMA, "--hidden-dropout", "0.1"]
    seen: list[bool] = []
    straight = _run(prefix, *flags, forward_step=_llama_checked(seen))
    assert seen == [True]
    save = str(tmp_path / "ckpt")
    _run(prefix, *flags, "--save", save, "--save-interval", "3", "--exit-interval", "3")
    resumed = _run(prefix, *flags, "--load", save, "--save", save, "--save-interval", "100")
    assert resumed.iteration == ITERS and resumed.consumed_tokens == straight.consumed_tokens
    assert [loss for _, loss in resumed.history] == [loss for _, loss in straight.history[3:]]


def test_tensorboard_shows_the_trained_steps_values_with_a_prefetching_loader(indexed_corpus,
                                                                             tmp_path):
    """Default --num-workers (2): the loader runs ahead of the loop, yet every step's
    curriculum/*, seqlen/* and the sampled-values histogram are that step's own, equal to
    the pacing functions and to the metric values of the samples the step trained on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from megatron.data_efficiency.analyzer.index_io import MetricIndex
    from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler, ScheduleConfig
    from megatron.data_efficiency.random_ltd import mslg_kept_length
    prefix, index = indexed_corpus
    tb = str(tmp_path / "tb")
    trained: list[list[int]] = []      # sample ids of each training step, in step order
    microbatches = GBS // 2

    def forward_step(data_iterator, model):
        def batches():
            for batch in data_iterator:
                if model.training:
                    if not trained or len(trained[-1]) == GBS:
                        trained.append([])
                    trained[-1].extend(batch["sample_id"].tolist())
                yield batch
        return pretrain_gpt.forward_step(batches(), model)

    _run(prefix, *_curriculum("seqtru_voc", index), *LTD, "--tensorboard-dir", tb,
         workers=None, forward_step=forward_step)
    assert len(trained) == ITERS and microbatches == 2
    acc = EventAccumulator(tb, size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("consumed-tokens", "steps-vs-tokens", "lm loss"):
        assert tag in tags, (tag, sorted(tags))

    def series(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    steps = range(1, ITERS + 1)                   # logged step k trained iteration k - 1
    seqtru = CurriculumScheduler(ScheduleConfig("fixed_linear", 8, SEQ, 4, 8))
    voc = CurriculumScheduler(ScheduleConfig("fixed_root", 10, 100, 4, 1, 2))
    seq = [min(seqtru.difficulty_at(k), SEQ) for k in steps]
    assert series("curriculum/seqtru") == [(k, seqtru.difficulty_at(k)) for k in steps]
    assert series("curriculum/voc") == [(k, voc.difficulty_at(k)) for k in steps]
    assert series("seqlen/curriculum_seqlen") == list(zip(steps, seq))
    assert series("seqlen/actual_seq_length") == list(zip(steps, seq))
    assert series("seqlen/random_ltd_reserved_length") == \
        [(k, min(mslg_kept_length(k - 1, 8, SEQ, 4, 8), s)) for k, s in zip(steps, seq)]
    values = np.asarray(MetricIndex.open(index).sample_to_metric, dtype=np.float64)
    hist = {e.step: e.histogram_value for e in acc.Histograms("curriculum/voc_sampled")}
    assert sorted(hist) == list(steps)
    for k in steps:
        got = values[trained[k - 1]]
        h = hist[k]
        assert (h.num, h.min, h.max) == (GBS, got.min(), got.max()), k
        assert h.sum == pytest.approx(got.sum()), k


def test_index_for_other_samples_is_refused(indexed_corpus):
    """Another seed shuffles the samples differently: the index no longer describes them.
    (A different --train-iters that leaves the sample maps unchanged is accepted: the
    tensorboard test above trains 3 steps on the 6-step index.)"""
    prefix, index = indexed_corpus
    flags = _flags(prefix, *_curriculum("voc", index))
    flags[flags.index("--seed") + 1] = str(SEED + 1)
    with pytest.raises(ValueError, match="fingerprint(.|\n)*tools/analyze_data.py"):
        pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                 ModelType.encoder_or_decoder,
                 pretrain_gpt.forward_step, argv=flags)


def test_index_refusal_reaches_the_metrics_file(indexed_corpus, tmp_path):
    """Tools read the refusal from the metrics file's end line (the study builds the
    index it names), not from the message: the analyzer command and its sample count."""
    from megatron.metrics_file import read_metrics
    prefix, index = indexed_corpus
    path = str(tmp_path / "metrics.jsonl")
    flags = _flags(prefix, *_curriculum("voc", index), "--metrics-file", path)
    flags[flags.index("--seed") + 1] = str(SEED + 1)
    with pytest.raises(ValueError, match="fingerprint"):
        pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                 ModelType.encoder_or_decoder, pretrain_gpt.forward_step, argv=flags)
    end = read_metrics(path).end
    assert (end["exit"], end["error"]["type"]) == ("error", "IndexMismatchError")
    assert end["error"]["train_samples"] == ITERS * GBS
    command = end["error"]["analyzer_command"]
    assert command.startswith("python tools/analyze_data.py --data-path " + prefix)
    assert f"--seed {SEED + 1} --train-samples {ITERS * GBS} " in command


def test_deepspeed_json_config_drives_random_ltd_and_conflicts_with_flags(indexed_corpus,
                                                                         tmp_path, capsys):
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
    with pytest.raises(SystemExit):
        _run(prefix, "--data-efficiency-config", str(config), *LTD)
    assert "give it in one place" in capsys.readouterr().err


def _recording_drops(drops: dict):
    """``forward_step`` that records every training micro-batch's token-drop indices."""
    def forward_step(data_iterator, model):
        def batches():
            for batch in data_iterator:
                plan = batch["token_drop_plan"]
                if model.training and plan is not None:
                    drops[(plan.iteration, plan.microbatch)] = plan.indices.clone()
                yield batch
        return pretrain_gpt.forward_step(batches(), model)
    return forward_step


def test_resume_mid_schedule_reproduces_the_token_drops(indexed_corpus, tmp_path):
    """Random-LTD alone, resumed at iteration 2 of a kept length that grows over 4 steps,
    with the default prefetching loader: the resumed run drops exactly the tokens the
    uninterrupted run dropped, step by step and micro-batch by micro-batch."""
    prefix, _ = indexed_corpus
    straight, first, resumed = {}, {}, {}
    _run(prefix, *LTD, workers=None, forward_step=_recording_drops(straight))
    save = str(tmp_path / "ckpt")
    _run(prefix, *LTD, "--save", save, "--save-interval", "2", "--exit-interval", "2",
         workers=None, forward_step=_recording_drops(first))
    _run(prefix, *LTD, "--load", save, "--save", save, "--save-interval", "100", workers=None,
         forward_step=_recording_drops(resumed))
    assert sorted(straight) == [(it, m) for it in range(4) for m in range(2)]   # r < 32
    assert sorted(first) == sorted(k for k in straight if k[0] < 2)
    assert sorted(resumed) == sorted(k for k in straight if k[0] >= 2)
    for key, indices in {**first, **resumed}.items():
        assert torch.equal(indices, straight[key]), key
    assert not torch.equal(straight[(2, 0)], straight[(2, 1)])


def test_difficulty_window_composes_with_seqtru_and_random_ltd(indexed_corpus):
    """Pruning as a curriculum whose window never moves: with seqtru and random-LTD, and the
    default prefetching loader, every trained sample lies in the [25, 75] voc band."""
    from megatron.data_efficiency.analyzer.index_io import MetricIndex
    prefix, index = indexed_corpus
    trained: list[int] = []

    def forward_step(data_iterator, model):
        def batches():
            for batch in data_iterator:
                if model.training:
                    trained.extend(batch["sample_id"].tolist())
                yield batch
        return pretrain_gpt.forward_step(batches(), model)

    flags = ["--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru", "voc",
             "--curriculum-index-path", index, "--curriculum-difficulty-type", "value",
             "percentile_window", "--curriculum-window-low", "25",
             "--curriculum-min-difficulty", "8", "75", "--curriculum-max-difficulty", str(SEQ),
             "75", "--curriculum-schedule-type", "fixed_linear",
             "--curriculum-total-steps", "4", "--curriculum-difficulty-step", "8", "1"]
    state = _run(prefix, *flags, *LTD, workers=None, forward_step=forward_step)
    assert len(trained) == ITERS * GBS and all(np.isfinite([x for _, x in state.history]))
    idx = MetricIndex.open(index)
    n = idx.num_samples
    pos = np.empty(n, dtype=np.int64)
    pos[np.asarray(idx.sorted_samples)] = np.arange(n)
    lo, hi = (n // 100) * 25, (n // 100) * 75
    assert ((pos[trained] >= lo) & (pos[trained] < hi)).all()
    kept = [8, 8, 16, 24, 32, 32]                 # as the test above: seqtru 8 -> 32, LTD 8 -> 32
    seqs = [8, 16, 24, 32, 32, 32]
    assert state.consumed_tokens == sum(tokens_per_step(GBS, s, LAYERS, LAYERS - 2, min(r, s))
                                        for s, r in zip(seqs, kept))
