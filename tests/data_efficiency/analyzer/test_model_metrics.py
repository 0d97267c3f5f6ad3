"""Model-based analyzer metrics (--metrics loss ppl --reference-load CKPT): the index holds
each training sample's own loss under the checkpoint (any TP layout it was saved with),
1 and 2 MPI ranks write the same bytes, a killed run resumes, and another checkpoint
never reuses the first one's shards."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer.analyzer import AnalyzerConfig, run_analyzer
from megatron.data_efficiency.analyzer.index_io import MetricIndex
from megatron.checkpointing.whole_model import load_model
from megatron.data_efficiency.analyzer.model_metrics import TokenLossMetric, reference_model
from megatron.data_efficiency.analyzer.shards import ShardLimitReached

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TOOL = os.path.join(ROOT, "tools", "analyze_data.py")
VOCAB, SEQ, SEED, SAMPLES = 64, 16, 3, 24


def load_reference_model(path):
    """The reference as tools/analyze_data.py loads it."""
    return reference_model(load_model(path, device="cpu"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A token store, and a tiny GPT trained 2 steps on it and saved (TP1), plus the same
    checkpoint converted to TP2 by tools/checkpoint_util.py."""
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    import pretrain_gpt
    sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
    from tool_loader import load_tool
    root = tmp_path_factory.mktemp("model_metrics")
    prefix = str(root / "corpus")
    rng = np.random.default_rng(0)
    b = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(60):
        doc = np.minimum(rng.zipf(1.4, size=int(rng.integers(4, 40))), VOCAB - 2)
        b.add_document(np.append(doc, VOCAB - 1), [len(doc) + 1])
    b.finalize(prefix + ".idx")
    ckpt = str(root / "ckpt")
    pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
             ModelType.encoder_or_decoder, pretrain_gpt.forward_step, argv=[
                 "--num-layers", "2", "--hidden-size", "16", "--num-attention-heads", "2",
                 "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
                 "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "2",
                 "--lr", "1e-2", "--vocab-size", str(VOCAB), "--data-path", prefix,
                 "--split", "90,10,0", "--seed", str(SEED), "--num-workers", "0",
                 "--eval-interval", "100", "--eval-iters", "1", "--save", ckpt,
                 "--save-interval", "2", "--hidden-dropout", "0.1"])
    tp2 = str(root / "ckpt_tp2")
    load_tool("checkpoint_util").convert(ckpt, tp2, 2, 1)
    return prefix, ckpt, tp2


def _cfg(prefix, save, **kw):
    return AnalyzerConfig(data_prefix=prefix, save_path=save, metrics=(), granularity="sample",
                          split="90,10,0", seq_length=SEQ, seed=SEED, train_samples=SAMPLES,
                          progress=False, **kw)


def _direct_losses(ckpt, samples):
    """The training loss (pretrain_gpt.loss_func) of each sample alone, with the model
    rebuilt from the TP1 checkpoint file by hand."""
    from megatron.checkpointing.record import saved_run_config
    from megatron.model.gpt_model import GPTModel
    import pretrain_gpt
    state = torch.load(os.path.join(ckpt, "iter_0000002", "mp_rank_00", "model_optim_rng.pt"),
                       weights_only=False)
    model = GPTModel(saved_run_config(state, ckpt).model)
    model.load_state_dict(state["model"])
    model.eval()
    out = []
    with torch.no_grad():
        for text in samples:
            t = torch.as_tensor(text)[None]
            losses = model(t[:, :-1], torch.arange(SEQ)[None], None, labels=t[:, 1:])
            loss, _ = pretrain_gpt.loss_func(torch.ones(1, SEQ), losses)
            out.append(float(loss))
    return np.array(out)


def test_loss_index_equals_each_samples_own_loss_for_any_tp_layout(setup, tmp_path):
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    prefix, ckpt, tp2 = setup
    results = {}
    for name, path in (("tp1", ckpt), ("tp2", tp2)):
        ref = load_reference_model(path)
        run_analyzer(_cfg(prefix, str(tmp_path / name), model_metrics=(
            TokenLossMetric(ref, "loss", batch_size=5), TokenLossMetric(ref, "ppl", 5))))
        results[name] = MetricIndex.open(str(tmp_path / name / "loss"))
    train, _, _ = build_train_valid_test_datasets([prefix], "90,10,0", [SAMPLES, 0, 0], SEQ,
                                                  SEED)
    ids = [0, 3, 7, len(train) - 1]
    want = _direct_losses(ckpt, [train[i]["text"] for i in ids])
    for name, index in results.items():
        got = np.asarray(index.sample_to_metric)[ids]
        assert index.sample_to_metric.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)
        assert index.meta["fingerprint"] and index.meta["model_metric"] == "loss"
    np.testing.assert_allclose(np.asarray(results["tp2"].sample_to_metric),
                               np.asarray(results["tp1"].sample_to_metric), rtol=1e-5)
    # (the TP2 checkpoint's vocabulary is padded to other rows, so its weight hash differs)
    ppl = MetricIndex.open(str(tmp_path / "tp1" / "ppl"))
    np.testing.assert_allclose(np.asarray(ppl.sample_to_metric),
                               np.exp(np.asarray(results["tp1"].sample_to_metric)))


def _tool(args, ranks=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, TOOL, *args] + (["--num-workers", str(ranks)] if ranks else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_one_and_two_mpi_ranks_write_identical_indexes(setup, tmp_path):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.skip("no mpiexec beside the interpreter")
    prefix, ckpt, _ = setup
    common = ["--data-path", prefix, "--granularity", "sample", "--split", "90,10,0",
              "--seq-length", str(SEQ), "--seed", str(SEED), "--train-samples", str(SAMPLES),
              "--metrics", "loss", "proto_dist", "--kmeans-clusters", "3",
              "--kmeans-fit-samples", "20", "--reference-load", ckpt,
              "--reference-batch-size", "4",
              "--shard-tokens", "100", "--batch-tokens", "60", "--quiet",
              "--data-cache-path", str(tmp_path / "cache")]
    one = _tool(common + ["--save-path", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = _tool(common + ["--save-path", str(tmp_path / "two")], ranks=2)
    assert two.returncode == 0, two.stderr
    for metric in ("loss", "proto_dist"):
        for f in ("sample_to_metric.npy", "sorted_samples.npy", "values.npy", "offsets.npy",
                  "meta.json"):
            a = open(tmp_path / "one" / metric / f, "rb").read()
            assert a == open(tmp_path / "two" / metric / f, "rb").read(), (metric, f)
        meta = json.loads(open(tmp_path / "one" / metric / "meta.json").read())
        assert meta["dtype"] == "float64" and math.isfinite(meta["max"])
    meta = json.loads(open(tmp_path / "one" / "proto_dist" / "meta.json").read())
    assert meta["kmeans_clusters"] == 3 and 0 <= meta["min"] <= meta["max"] <= 2


def test_killed_run_resumes_and_another_checkpoint_does_not_reuse_its_shards(setup, tmp_path):
    prefix, ckpt, _ = setup
    ref = load_reference_model(ckpt)
    metric = (TokenLossMetric(ref, "loss", 4),)
    kw = dict(shard_tokens=100, batch_tokens=60)
    clean = run_analyzer(_cfg(prefix, str(tmp_path / "clean"), model_metrics=metric, **kw))
    assert clean["shards_computed"] >= 3
    with pytest.raises(ShardLimitReached):
        run_analyzer(_cfg(prefix, str(tmp_path / "r"), model_metrics=metric,
                          fail_after_shards=2, **kw))
    resumed = run_analyzer(_cfg(prefix, str(tmp_path / "r"), model_metrics=metric, **kw))
    assert resumed["shards_reused"] == 2
    for f in ("sample_to_metric.npy", "sorted_samples.npy", "meta.json"):
        assert open(tmp_path / "clean" / "loss" / f, "rb").read() == \
            open(tmp_path / "r" / "loss" / f, "rb").read()
    # Same save path, interrupted again, then resumed with other weights: nothing reused.
    with pytest.raises(ShardLimitReached):
        run_analyzer(_cfg(prefix, str(tmp_path / "s"), model_metrics=metric,
                          fail_after_shards=2, **kw))
    other = load_reference_model(ckpt)
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.01)
    other.fingerprint = "perturbed-weights"
    fresh = run_analyzer(_cfg(prefix, str(tmp_path / "s"), model_metrics=(
        TokenLossMetric(other, "loss", 4),), **kw))
    assert fresh["shards_reused"] == 0


def test_proto_dist_matches_a_direct_computation_for_a_fixed_clustering(setup, tmp_path):
    """Fixed centroids; embeddings read from the final layer norm's output by a hook on the
    ordinary forward pass; distance 1 - cos to the Euclidean-nearest centroid."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    from megatron.data_efficiency.analyzer.proto_metrics import ProtoDistMetric
    prefix, ckpt, _ = setup
    ref = load_reference_model(ckpt)
    centroids = np.random.default_rng(1).normal(size=(3, 16))
    run_analyzer(_cfg(prefix, str(tmp_path / "p"), model_metrics=(
        ProtoDistMetric(ref, centroids, batch_size=5),)))
    got = np.asarray(MetricIndex.open(str(tmp_path / "p" / "proto_dist")).sample_to_metric)
    train, _, _ = build_train_valid_test_datasets([prefix], "90,10,0", [SAMPLES, 0, 0], SEQ,
                                                  SEED)
    captured = []
    hook = ref.model.transformer.final_layernorm.register_forward_hook(
        lambda mod, inp, out: captured.append(out.detach()))
    want = []
    with torch.no_grad():
        for i in range(len(train)):
            t = torch.as_tensor(train[i]["text"])[None, :-1]
            ref.model(t, torch.arange(SEQ)[None], None)
            e = captured.pop()[:, 0].double().mean(0).numpy()       # [s, 1, h] -> [h]
            e = e / np.linalg.norm(e)
            c = centroids[np.argmin([np.linalg.norm(e - c) for c in centroids])]
            want.append(1 - e @ c / np.linalg.norm(c))
    hook.remove()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_model_metrics_over_a_blend_score_the_blends_own_samples(setup, tmp_path):
    """A blend of the corpus and a second store: each blend sample's loss is its own, and
    proto_dist fits its centroids on the blend's samples (BlendSampleSource.batch)."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    from megatron.data_efficiency.analyzer import proto_metrics
    from megatron.data_efficiency.analyzer.blend import build_blend_source, run_blend_analyzer
    from megatron.data_efficiency.analyzer.comm import world
    prefix, ckpt, _ = setup
    other = str(tmp_path / "other")
    rng = np.random.default_rng(5)
    b = MMapIndexedDatasetBuilder(other + ".bin", dtype=np.uint16)
    for n in rng.integers(4, 40, size=40):
        b.add_document(rng.integers(0, VOCAB, size=int(n)), [int(n)])
    b.finalize(other + ".idx")
    data_path = ("0.4", prefix, "0.6", other)
    cfg = dataclasses.replace(_cfg(" ".join(data_path), str(tmp_path / "b")),
                              data_path=data_path, shard_tokens=5 * (SEQ + 1))
    ref = load_reference_model(ckpt)
    centroids = proto_metrics.fit_centroids(ref, build_blend_source(cfg), world(), 2, 10, SEED,
                                            show_progress=False)
    run_blend_analyzer(dataclasses.replace(cfg, model_metrics=(
        TokenLossMetric(ref, "loss", batch_size=5),
        proto_metrics.ProtoDistMetric(ref, centroids, 5, {}))))
    blend, _, _ = build_train_valid_test_datasets(list(data_path), "90,10,0", [SAMPLES, 0, 0],
                                                  SEQ, SEED)
    assert {blend[i]["dataset_id"] for i in range(len(blend))} == {0, 1}
    loss = MetricIndex.open(str(tmp_path / "b" / "loss"))
    np.testing.assert_allclose(np.asarray(loss.sample_to_metric),
                               _direct_losses(ckpt, [blend[i]["text"] for i in range(len(blend))]),
                               rtol=1e-5)
    assert len(loss.meta["blend"]) == 2
    proto = np.asarray(MetricIndex.open(str(tmp_path / "b" / "proto_dist")).sample_to_metric)
    assert len(proto) == SAMPLES and np.all((proto >= 0) & (proto <= 2))


# -- documents (--granularity document) ------------------------------------------------------
DOC_LENGTHS = [0, 1, 2, 3, SEQ, SEQ + 1, SEQ + 2, 2 * SEQ + 1, 2 * SEQ + 2, 40]


@pytest.fixture(scope="module")
def doc_store(tmp_path_factory):
    """Documents of 0, 1 and 2 tokens, ones at and around window boundaries, random ones;
    some documents of two sequences."""
    rng = np.random.default_rng(4)
    lengths = DOC_LENGTHS + [int(x) for x in rng.integers(2, 60, size=20)]
    docs = [rng.integers(0, VOCAB, size=n) for n in lengths]
    prefix = str(tmp_path_factory.mktemp("docs") / "docs")
    b = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for k, doc in enumerate(docs):
        cut = [len(doc)] if k % 3 or len(doc) < 2 else [len(doc) // 2, len(doc) - len(doc) // 2]
        b.add_document(doc, cut)
    b.finalize(prefix + ".idx")
    return prefix, docs


def test_windows_share_their_boundary_token_and_cover_every_prediction_once():
    from megatron.data_efficiency.analyzer.document_scoring import cut_windows
    offsets = np.cumsum([0] + DOC_LENGTHS)
    w = cut_windows(offsets, SEQ)
    for d, n in enumerate(DOC_LENGTHS):
        mine = w.doc == d
        starts, lengths = w.start[mine] - offsets[d], w.length[mine]
        want = list(range(0, max(n - 1, 0), SEQ))
        assert starts.tolist() == want, (n, starts)
        assert (lengths <= SEQ + 1).all() and (lengths >= 2).all()
        assert int((lengths - 1).sum()) == max(n - 1, 0)          # each prediction once
        assert all(s + k <= n for s, k in zip(starts, lengths))


def _windowed_loss(model, doc, window):
    """Mean token loss of one document by hand: its windows one at a time, unpadded."""
    total = 0.0
    for start in range(0, len(doc) - 1, window):
        t = torch.as_tensor(doc[start:start + window + 1], dtype=torch.long)[None]
        pos = torch.arange(t.shape[1] - 1)[None]
        total += float(model(t[:, :-1], pos, None, labels=t[:, 1:]).double().sum())
    return total / (len(doc) - 1) if len(doc) > 1 else 0.0


def test_document_loss_is_the_mean_over_its_windows_and_resumes(setup, doc_store, tmp_path):
    _, ckpt, _ = setup
    prefix, docs = doc_store
    ref = load_reference_model(ckpt)
    cfg = dict(data_prefix=prefix, metrics=(), granularity="document", progress=False,
               shard_tokens=120, batch_tokens=90)
    for window in (SEQ, 5):
        metric = (TokenLossMetric(ref, "loss", 3, window), TokenLossMetric(ref, "ppl", 3, window))
        run_analyzer(AnalyzerConfig(save_path=str(tmp_path / f"w{window}"), model_metrics=metric,
                                    **cfg))
        loss = MetricIndex.open(str(tmp_path / f"w{window}" / "loss"))
        with torch.no_grad():
            want = [_windowed_loss(ref.model, doc, window) for doc in docs]
        np.testing.assert_allclose(np.asarray(loss.sample_to_metric), want, rtol=1e-5, atol=1e-7)
        assert loss.sample_to_metric[0] == loss.sample_to_metric[1] == 0.0   # nothing predicted
        assert loss.meta["granularity"] == "document"
        assert loss.meta["document_window_tokens"] == window + 1
        ppl = MetricIndex.open(str(tmp_path / f"w{window}" / "ppl"))
        np.testing.assert_allclose(np.asarray(ppl.sample_to_metric),
                                   np.exp(np.asarray(loss.sample_to_metric)))
    with pytest.raises(ShardLimitReached):      # killed after two shards, then resumed
        run_analyzer(AnalyzerConfig(save_path=str(tmp_path / "r"), fail_after_shards=2,
                                    model_metrics=(TokenLossMetric(ref, "loss", 3, SEQ),), **cfg))
    resumed = run_analyzer(AnalyzerConfig(save_path=str(tmp_path / "r"), model_metrics=(
        TokenLossMetric(ref, "loss", 3, SEQ),), **cfg))
    assert resumed["shards_reused"] == 2
    for f in ("sample_to_metric.npy", "sorted_samples.npy", "meta.json"):
        assert open(tmp_path / f"w{SEQ}" / "loss" / f, "rb").read() == \
            open(tmp_path / "r" / "loss" / f, "rb").read()
    with pytest.raises(ShardLimitReached):      # another window never reuses those shards
        run_analyzer(AnalyzerConfig(save_path=str(tmp_path / "s"), fail_after_shards=2,
                                    model_metrics=(TokenLossMetric(ref, "loss", 3, 5),), **cfg))
    assert run_analyzer(AnalyzerConfig(save_path=str(tmp_path / "s"), model_metrics=(
        TokenLossMetric(ref, "loss", 3, SEQ),), **cfg))["shards_reused"] == 0
    with pytest.raises(ValueError, match=f"reads at most {SEQ} positions"):
        TokenLossMetric(ref, "loss", 3, SEQ + 1)


def test_document_proto_dist_averages_every_window_input(setup, doc_store, tmp_path):
    from megatron.data_efficiency.analyzer.proto_metrics import ProtoDistMetric
    _, ckpt, _ = setup
    prefix, docs = doc_store
    ref = load_reference_model(ckpt)
    centroids = np.random.default_rng(1).normal(size=(3, 16))
    run_analyzer(AnalyzerConfig(data_prefix=prefix, save_path=str(tmp_path), metrics=(),
                                granularity="document", progress=False, model_metrics=(
                                    ProtoDistMetric(ref, centroids, 4, document_window=SEQ),)))
    got = np.asarray(MetricIndex.open(str(tmp_path / "proto_dist")).sample_to_metric)
    captured = []
    hook = ref.model.transformer.final_layernorm.register_forward_hook(
        lambda mod, inp, out: captured.append(out.detach()))
    want = []
    with torch.no_grad():
        for doc in docs:
            e = np.zeros(16)
            for start in range(0, len(doc) - 1, SEQ):
                t = torch.as_tensor(doc[start:start + SEQ + 1], dtype=torch.long)[None, :-1]
                ref.model(t, torch.arange(t.shape[1])[None], None)
                e += captured.pop()[:, 0].double().sum(0).numpy()
            if not e.any():
                want.append(1.0)                    # no input: zero embedding, cos 0
                continue
            e = e / np.linalg.norm(e)
            c = centroids[np.argmin([np.linalg.norm(e - c) for c in centroids])]
            want.append(1 - e @ c / np.linalg.norm(c))
    hook.remove()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_tool_scores_documents_and_prune_keeps_the_lowest_perplexity(setup, doc_store, tmp_path):
    """The analyzer tool at --granularity document (window: the reference's --seq-length),
    then tools/prune_data.py keeps the lowest-perplexity 60% of the documents."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
    from tool_loader import load_tool
    from megatron.data.indexed_dataset import MMapIndexedDataset
    from megatron.data_efficiency.analyzer.index_io import dataset_fingerprint
    _, ckpt, _ = setup
    prefix, docs = doc_store
    assert load_tool("analyze_data").main([
        "--data-path", prefix, "--granularity", "document", "--metrics", "ppl", "proto_dist",
        "--kmeans-clusters", "2", "--kmeans-fit-samples", "12", "--reference-load", ckpt,
        "--reference-batch-size", "3", "--save-path", str(tmp_path / "an"), "--quiet"]) == 0
    ppl = MetricIndex.open(str(tmp_path / "an" / "ppl"),
                           dataset_fingerprint([prefix], "document"))
    assert ppl.meta["document_window_tokens"] == SEQ + 1 and ppl.num_samples == len(docs)
    with torch.no_grad():
        want = np.exp([_windowed_loss(load_reference_model(ckpt).model, d, SEQ) for d in docs])
    np.testing.assert_allclose(np.asarray(ppl.sample_to_metric), want, rtol=1e-5)
    proto = MetricIndex.open(str(tmp_path / "an" / "proto_dist"))
    assert proto.meta["kmeans_clusters"] == 2 and proto.meta["granularity"] == "document"
    out = str(tmp_path / "low_ppl")
    result = load_tool("prune_data").main(["--data-path", prefix, "--index",
                                           str(tmp_path / "an" / "ppl"), "--keep-fraction", "0.6",
                                           "--order", "easy", "--output-prefix", out])
    values = np.asarray(ppl.sample_to_metric)
    kept = np.sort(np.lexsort((np.arange(len(values)), values))[:int(0.6 * len(values))])
    pruned = MMapIndexedDataset(out)
    assert result.kept == len(kept) == pruned.num_documents
    for k, d in enumerate(kept):
        np.testing.assert_array_equal(
            pruned.tokens[pruned.pointers[pruned.doc_idx[k]] // 2:][:len(docs[d])], docs[d])


def test_model_scoring_reports_every_batch_with_rate_and_eta(setup, tmp_path, capsys):
    """Scoring prints progress per forward batch (not only per shard): the first batch at
    once, then at most every 10 s, and the end; the total is this rank's rows still to
    score (shards finished earlier are not counted)."""
    prefix, ckpt, _ = setup
    metric = TokenLossMetric(load_reference_model(ckpt), "loss", batch_size=5)
    cfg = _cfg(prefix, str(tmp_path / "idx"), model_metrics=(metric,))
    cfg = dataclasses.replace(cfg, progress=True, shard_tokens=10 ** 6)
    run_analyzer(cfg)
    lines = [ln for ln in capsys.readouterr().err.splitlines()
             if ln.startswith("[analyzer] metric loss:") and " samples (" in ln]
    total = metric.progress.total
    assert total == len(MetricIndex.open(str(tmp_path / "idx" / "loss")).sample_to_metric)
    assert lines[0].startswith(f"[analyzer] metric loss: 5/{total:,} samples (")
    assert "samples/s" in lines[0] and "ETA " in lines[0]
    assert lines[-1].startswith(f"[analyzer] metric loss: {total:,}/{total:,} samples (100.0%")
    assert lines[-1].endswith("done")


def test_row_progress_lines_are_spaced_and_counted():
    import io
    from megatron.data_efficiency.analyzer.row_progress import RowProgress, clock
    t = [0.0]
    out = io.StringIO()
    p = RowProgress("metric loss", 100, every=10.0, stream=out, now=lambda: t[0])
    for _ in range(20):          # a batch of 5 rows per second
        t[0] += 1.0
        p.advance(5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3       # the first batch, 10 s later, the end
    assert lines[0] == ("[analyzer] metric loss: 5/100 samples (5.0%), 5.0 samples/s, "
                        "1s elapsed, ETA 19s")
    assert lines[1].startswith("[analyzer] metric loss: 55/100 samples (55.0%)")
    assert lines[-1].endswith("100/100 samples (100.0%), 5.0 samples/s, 20s elapsed, done")
    assert RowProgress("x", 0, stream=out).enabled is False
    assert (clock(59), clock(61), clock(3725)) == ("59s", "1m01s", "1h02m")
