"""Curriculum sampler: eligibility, cluster semantics, DP shares, resume, several metrics."""
import json
import os

import numpy as np
import pytest
from curriculum_testlib import admitted_end, linear, memory_index, paced_sampler, sampler

from megatron.data_efficiency.analyzer.index_io import MetricIndex, write_metric_index

RNG = np.random.default_rng(1234)
VALUES = RNG.integers(0, 40, size=3000)          # many ties


@pytest.mark.parametrize("kind, pace", [("value", (3, 40, 60, 1)),
                                        ("percentile", (5, 100, 60, 5))])
def test_every_id_is_eligible_at_the_threshold_in_force(kind, pace):
    s = sampler([("m", VALUES, kind, pace)], gbs=64, mbs=4, dp_size=4)
    seen = set()
    for step in range(1, 80):
        batch = s.next_global_batch()
        d = s.current_difficulties["m"]
        assert d == linear(*pace).get_difficulty(step)
        ok = admitted_end(VALUES, kind, d)
        assert ok[batch].all(), f"step {step}: an id above difficulty {d}"
        assert s.admitted_samples == ok.sum()
        seen.update(batch.tolist())
    assert len(seen) > 0.8 * len(VALUES)          # the pool really grew


def test_percentile_prefix_is_deepspeeds_arithmetic():
    """A percentile p admits (N // max_difficulty) * p samples (DeepSpeed's integer
    arithmetic, all N at the maximum), not p% of N."""
    from megatron.data_efficiency.analyzer.index_io import percentile_prefix
    assert percentile_prefix(1005, 50) == (1005 // 100) * 50 == 500      # not 502
    assert percentile_prefix(1005, 100) == 1005
    assert percentile_prefix(1005, 12.5) == 125 and percentile_prefix(1005, 3, 10) == 300


def test_cluster_draws_without_replacement_then_reshuffles():
    vals = np.arange(256)
    s = sampler([("m", vals, "value", (1000, 1000, 10, 1))], gbs=32, mbs=4, dp_size=1)
    epoch1 = np.concatenate([s.next_global_batch() for _ in range(8)])
    epoch2 = np.concatenate([s.next_global_batch() for _ in range(8)])
    assert sorted(epoch1.tolist()) == list(range(256))
    assert sorted(epoch2.tolist()) == list(range(256))
    assert not np.array_equal(epoch1, epoch2)


def test_batches_mix_clusters_in_proportion_to_size():
    vals = np.r_[np.zeros(1000, int), np.ones(3000, int)]
    # value 0 admitted at step 1 (cluster 0, 1000 ids), value 1 at step 2 (3000 ids).
    s = sampler([("m", vals, "value", (0, 1, 2, 1))], gbs=512, mbs=8, dp_size=1)
    s.next_global_batch()
    frac = np.mean([(s.next_global_batch() < 1000).mean() for _ in range(200)])
    assert abs(frac - 0.25) < 0.01


def test_a_slot_on_a_cluster_edge_belongs_to_the_cluster_that_starts_there():
    """Each step after the first admits one more sample (value t at step t): clusters of
    one (the first holds values 0 and 1). A slot
    drawn exactly at a cluster's first position is that cluster's, so every admitted
    sample is drawn at the same rate; an off-by-one in the search over the clusters'
    cumulative edges would hand those slots to the cluster before and starve each new
    one."""
    vals = np.arange(8)
    s = sampler([("m", vals, "value", (0, 7, 7, 1))], gbs=800, mbs=8, dp_size=1)
    for step in range(1, 8):
        s.next_global_batch()
        assert s.admitted_samples == step + 1 and s.num_clusters == step
    counts = np.bincount(np.concatenate([s.next_global_batch() for _ in range(5)]),
                         minlength=8)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean(), counts


def test_dp_shares_are_disjoint_and_complete_and_stages_agree():
    spec = [("m", VALUES, "percentile", (10, 100, 30, 10))]
    ranks = [sampler(spec, gbs=48, mbs=3, dp_rank=r, dp_size=4) for r in range(4)]
    other_stage = sampler(spec, gbs=48, mbs=3, dp_rank=2, dp_size=4)   # same DP rank, other PP stage
    its = [iter(s) for s in ranks]
    it_stage = iter(other_stage)
    for _ in range(20):
        mine = [[next(it) for _ in range(4)] for it in its]          # 4 micro-batches each
        glob = ranks[0].global_batch(ranks[0].step)
        for r in range(4):
            assert ranks[r].global_batch(ranks[r].step).tolist() == glob.tolist()
        flat = [i for r in range(4) for mb in mine[r] for i in mb]
        assert sorted(flat) == sorted(glob.tolist())                 # complete
        for m in range(4):                                            # Megatron's order
            for r in range(4):
                assert mine[r][m] == glob[m * 12 + r * 3: m * 12 + r * 3 + 3].tolist()
        assert [next(it_stage) for _ in range(4)] == mine[2]


@pytest.mark.parametrize("two_metrics", [False, True])
def test_resume_gives_the_same_id_stream(two_metrics):
    spec = [("a", VALUES, "percentile", (2, 100, 50, 2))]
    if two_metrics:
        spec.append(("b", RNG.permutation(VALUES), "value", (10, 40, 40, 1)))
    ref = sampler(spec, gbs=40, mbs=5, dp_size=2, buffer_size=64)
    ref_stream = [ref.next_global_batch().tolist() for _ in range(70)]
    a = sampler(spec, gbs=40, mbs=5, dp_size=2, buffer_size=64)
    for _ in range(33):
        a.next_global_batch()
    state = json.loads(json.dumps(a.state_dict()))                   # checkpointable as JSON
    b = sampler(spec, gbs=40, mbs=5, dp_size=2, buffer_size=64)
    b.load_state_dict(state)
    assert [b.next_global_batch().tolist() for _ in range(37)] == ref_stream[33:]
    # A loader that fetched 5 steps ahead: rewind to what training consumed.
    for _ in range(5):
        a.next_global_batch()
    c = sampler(spec, gbs=40, mbs=5, dp_size=2, buffer_size=64)
    c.load_state_dict(a.state_dict(steps_consumed=36))
    assert [c.next_global_batch().tolist() for _ in range(10)] == ref_stream[36:46]


def test_several_metrics_admit_the_intersection():
    v1 = RNG.integers(0, 50, size=2000)
    v2 = RNG.integers(0, 20, size=2000)
    s = sampler([("a", v1, "value", (10, 50, 40, 5)), ("b", v2, "percentile", (20, 100, 25, 20))],
                gbs=32, mbs=4, dp_size=2)
    for _ in range(60):
        batch = s.next_global_batch()
        d = s.current_difficulties
        ok = admitted_end(v1, "value", d["a"]) & admitted_end(v2, "percentile", d["b"])
        assert ok[batch].all()
        assert s.admitted_samples == ok.sum()       # cluster sizes are exact


def test_no_sample_admitted_is_a_clear_error():
    s = sampler([("m", np.full(100, 50), "value", (1, 10, 10, 1))])
    with pytest.raises(RuntimeError, match="no sample is admitted"):
        s.next_global_batch()


def test_reads_analyzer_index_files_and_writes_nothing(tmp_path):
    folder = str(tmp_path / "voc")
    write_metric_index(folder, "voc", VALUES.astype(np.float64) / 7, "fp0")
    before = {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in os.listdir(folder)}
    index = MetricIndex.open(folder, "fp0")
    s = paced_sampler([("voc", index, "percentile", linear(1, 100, 20))], 16, 2, 1, 2, seed=3)
    ref = sampler([("voc", VALUES.astype(np.float64) / 7, "percentile", (1, 100, 20, 1))],
                  gbs=16, mbs=2, dp_rank=1, dp_size=2, seed=3)
    for _ in range(25):
        assert s.next_global_batch().tolist() == ref.next_global_batch().tolist()
    after = {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in os.listdir(folder)}
    assert after == before and sorted(os.listdir(tmp_path)) == ["voc"]


def test_bad_layout_is_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        sampler([("m", VALUES, "value", (1, 9, 9, 1))], gbs=30, mbs=4, dp_size=2)
    with pytest.raises(ValueError, match="disagree"):
        sampler([("a", VALUES, "value", (1, 9, 9, 1)), ("b", VALUES[:10], "value", (1, 9, 9, 1))])
    assert memory_index(VALUES).num_samples == 3000
