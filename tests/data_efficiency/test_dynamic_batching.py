"""Token-budget batches (dynamic_batching): the plan per step, each DP rank's share, the
seqlen metric's checks, and where it is refused."""
import numpy as np
import pytest

from megatron.data_efficiency.config import config_from_dict
from megatron.data_efficiency.dynamic_batching.data import (TokenBatchSampler,
                                                            build_token_batches,
                                                            check_num_epochs, load_seqlens)
from megatron.errors import BadConfigError
from megatron.data_efficiency.dynamic_batching.packing import pack
from megatron.data_efficiency.dynamic_batching.stream import CurriculumPacking, DatasetOrder
from megatron.data_efficiency.step_plan import RunShape, StepPlanner

GBS, SEQ = 4, 32
SEQLENS = np.random.default_rng(3).integers(5, SEQ + 1, 200)


def _config(extra: dict | None = None, **batching):
    de = {"enabled": True, "data_sampling": {"dynamic_batching": {
        "enabled": True, "max_tokens": 64, "metrics_path": "/idx", **batching}}}
    de.update(extra or {})
    return config_from_dict({"data_efficiency": de})


def _curriculum_config(**batching):
    """Token-budget batches of samples truncated to 8, 16, 24, 32 tokens (seqtru)."""
    return config_from_dict({"data_efficiency": {"enabled": True, "data_sampling": {
        "enabled": True, "dynamic_batching": {
            "enabled": True, "max_tokens": 64, "metrics_path": "/idx", **batching},
        "curriculum_learning": {"enabled": True, "curriculum_metrics": {"seqtru": {
            "min_difficulty": 8, "max_difficulty": SEQ, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 8}}}}}}})


def _planner(config=None, **shape) -> StepPlanner:
    shape = {"global_batch_size": GBS, "seq_length": SEQ, "num_layers": 2, "model": "bert",
             "num_microbatches": 2, **shape}
    return StepPlanner(config or _config(), RunShape(**shape))


def test_plans_are_the_packings_batches_and_each_dp_rank_takes_its_share():
    """Steps wrap around the packing; at DP 2 x micro-batch 1 x 2 micro-batches, rank r's
    micro-batch m is unit r + 2m of the step (DeepSpeed's DistributedSampler order), the
    ranks' micro-batches partition the step, and a second planner (another rank) plans the
    same."""
    tb = pack(SEQLENS, 64, GBS, order="seqlen", seed=1)
    planner = _planner().with_token_batches(tb)
    again = _planner().with_token_batches(pack(SEQLENS, 64, GBS, order="seqlen", seed=1))
    for it in (0, 1, tb.num_batches, tb.num_batches + 3):
        plan = planner.plan(it)
        k = it % tb.num_batches
        assert (plan.global_batch_size, plan.consumed_tokens) == \
            (tb.batch_samples(k), tb.batch_tokens(k))
        assert plan.lr_rule(2.0) == pytest.approx(2.0 * tb.batch_samples(k) / GBS)
        units = tb.microbatch_ids()[k * GBS:(k + 1) * GBS]
        shares = {(r, m): plan.step_batch.microbatch(r, 2, m, 1)[0].tolist()
                  for r in range(2) for m in range(2)}
        assert shares == {(r, m): units[r + 2 * m] for r in range(2) for m in range(2)}
        assert again.plan(it).step_batch.microbatch(1, 2, 1, 1)[0].tolist() == shares[1, 1]
    lines: list[str] = []
    build_token_batches(_config(sequence_picking_order="seqlen", verbose=True).dynamic_batching,
                        SEQLENS, GBS, 1, log=lines.append)
    assert lines[0].startswith(f" > dynamic batching: 200 samples packed into {tb.num_batches}")
    assert lines[1] == (f" > dynamic batching: batch 0: {tb.batch_samples(0)} samples, "
                        f"{tb.batch_tokens(0)} tokens, samples per unit "
                        f"{[len(u) for u in tb.microbatch_ids()[:GBS]]}, ids "
                        f"{sum(tb.microbatch_ids()[:GBS], [])}")
    assert len(lines) == 1 + tb.num_batches     # verbose: one line per batch
    sampler = TokenBatchSampler(lambda i: planner.plan(i).step_batch, 1, 2, 1, 2, 3,
                                tb.fingerprint())
    sampler.load_state_dict({"step": 3, "fingerprint": tb.fingerprint()})
    with pytest.raises(ValueError, match="checkpoint's packing .* differs from this run's"):
        sampler.load_state_dict({"step": 3, "fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="checkpoint is at step 2, the run resumes at "
                                         "iteration 3"):
        sampler.load_state_dict({"step": 2, "fingerprint": tb.fingerprint()})
    drawn = iter(sampler)
    assert [next(drawn) for _ in range(2)] == \
        [planner.plan(3).step_batch.microbatch(1, 2, m, 1)[0].tolist() for m in range(2)]


def test_refused_for_gpt_pipelines_random_ltd_a_curriculums_picking_order_and_without_its_keys():
    with pytest.raises(ValueError, match="GPT training samples are windows of exactly"):
        _planner(model="gpt")
    with pytest.raises(ValueError, match="pipeline-model-parallel-size > 1"):
        _planner(pipeline_stages=2)
    with pytest.raises(ValueError, match="sequence_picking_order 'seqlen' beside "
                                         "curriculum_learning: the curriculum's draws order"):
        _planner(_curriculum_config(sequence_picking_order="seqlen"))
    ltd = {"data_routing": {"random_ltd": {
        "enabled": True, "total_layer_num": 2, "random_ltd_layer_num": 1,
        "random_ltd_layer_id": [1], "model_type": "encoder",
        "hidden_state_order": "seq_batch_dim",
        "random_ltd_schedule": {"min_value": 8, "max_value": SEQ,
                                "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": 4, "seq_per_step": 8}}}}}
    with pytest.raises(ValueError, match="beside data_routing.random_ltd"):
        _planner(_config(ltd))
    for missing in ("max_tokens", "metrics_path"):
        d = {"enabled": True, "data_sampling": {"dynamic_batching": {
            "enabled": True, "max_tokens": 64, "metrics_path": "/idx"}}}
        del d["data_sampling"]["dynamic_batching"][missing]
        with pytest.raises(ValueError, match=f"dynamic_batching.{missing}: required"):
            config_from_dict({"data_efficiency": d})
    with pytest.raises(ValueError, match="enabled is false but data_sampling.dynamic_batching"):
        _config({"enabled": False})
    with pytest.raises(ValueError, match=r"sequence_picking_order='longest'"):
        _config(sequence_picking_order="longest")
    assert _config(lr_scaling_method="None").dynamic_batching.lr_scaling_method == "none"
    with pytest.raises(RuntimeError, match="need the packing of the training data"):
        _planner().plan(0)
    assert _planner().steps_for_tokens(1000) is None


def test_seqlen_metric_is_read_from_deepspeeds_files_and_its_count_checked(tmp_path):
    from megatron.data_efficiency.analyzer.deepspeed_index import write_deepspeed_rows
    (tmp_path / "seqlen").mkdir()
    write_deepspeed_rows(str(tmp_path / "seqlen" / "seqlen_sample_to_metric"),
                         [np.array([v]) for v in SEQLENS], np.uint16)
    assert load_seqlens(str(tmp_path), len(SEQLENS), None).tolist() == SEQLENS.tolist()
    with pytest.raises(ValueError, match="describes 200 samples but the training dataset "
                                         "has 201"):
        load_seqlens(str(tmp_path), 201, None)
    with pytest.raises(ValueError, match="no seqlen metric .* --metrics seqlen"):
        load_seqlens(str(tmp_path / "none"), 200, None, "tools/analyze_data.py --metrics seqlen")


def test_a_missing_seqlen_metric_names_the_analyzer_run_that_writes_it(tmp_path):
    """The runtime's refusal carries the analyzer command for this run's samples with the
    metric and the folder filled in (not the generic placeholders)."""
    from megatron.data_efficiency.data_family import GPTSamples, TrainingSamples
    from megatron.data_efficiency.runtime import DataEfficiencyRuntime

    class Family(GPTSamples):
        def fingerprint(self, dataset, samples):
            return "f"

    missing = str(tmp_path / "none")
    samples = TrainingSamples(("corpus_text_document",), "80,15,5", SEQ, 5, 40)
    runtime = DataEfficiencyRuntime(_planner(_config(metrics_path=missing)), samples=samples,
                                    family=Family())
    with pytest.raises(ValueError) as info:
        runtime.train_batch_sampler(list(range(40)), 2, 0)
    assert (f"python tools/analyze_data.py --data-path corpus_text_document --granularity "
            f"sample --split 80,15,5 --seq-length {SEQ} --seed 5 --train-samples 40 "
            f"--metrics seqlen --save-path {missing}") in str(info.value)


def test_num_epochs_bounds_the_steps_to_passes_over_the_packing():
    check_num_epochs(None, 10**6, 7, "ds.json")             # absent: no bound
    check_num_epochs(1.5, 10, 7, "ds.json")                 # 10 steps <= 1.5 passes of 7
    with pytest.raises(BadConfigError, match="num_epochs 1: the run takes 8 steps, but the "
                                             "token-budget packing has 7 batches a pass"):
        check_num_epochs(1, 8, 7, "ds.json")


def _packing(config, seqlens=SEQLENS):
    planner = _planner(config)
    stream = CurriculumPacking(config.dynamic_batching, seqlens, DatasetOrder(len(seqlens)),
                               planner.truncation_length, GBS, SEQ)
    return planner.with_token_batches(stream), stream


def test_a_curriculums_draws_are_packed_step_by_step_and_the_unfit_sample_carried():
    """Under seqtru (dataset order), each step packs the next samples at the step's
    truncated length into GBS units of at most max_tokens / max_batch_size; the sample
    that does not fit a step's last unit is the first of the next; one step's state
    resumes the same steps; steps are packed once, in order; DeepSpeed's left-out rule
    (a sample longer than max_tokens) and a unit below min_batch_size are left out."""
    planner, stream = _packing(_curriculum_config(max_batch_size=6))
    plans = [planner.plan(k) for k in range(6)]
    order: list[int] = []
    for k, plan in enumerate(plans):
        cap = min(SEQ, 8 * (k + 1))
        assert plan.step_batch.truncate == cap and plan.difficulties == {"seqtru": cap}
        units = plan.step_batch.batches.microbatch_ids()
        assert len(units) == GBS
        lens = [np.minimum(SEQLENS[u], cap) for u in units]
        assert all(len(u) <= 6 and n.sum() <= 64 for u, n in zip(units, lens))
        # a unit below 6 samples closed because its next sample did not fit
        nxt = [units[j + 1][0] for j in range(GBS - 1)] + [stream._batches[k + 1].batches
                                                           .sample_ids[0] if k < 5 else None]
        for u, n, first in zip(units, lens, nxt):
            if len(u) < 6 and first is not None:
                assert n.sum() + min(SEQLENS[first], cap) > 64
        assert plan.consumed_tokens == sum(int(n.sum()) for n in lens)
        assert plan.global_batch_size == sum(map(len, units))
        assert plan.lr_rule(1.0) == pytest.approx(plan.global_batch_size / GBS)
        order += [s for u in units for s in u]
    assert order == list(range(len(order)))      # nothing drawn is dropped
    assert plans[0].global_batch_size == 24      # 8 tokens a sample: 6 a unit
    again, replay = _packing(_curriculum_config(max_batch_size=6))
    replay.load_state_dict(stream.state_dict(3))
    assert [again.plan(k).step_batch.batches.microbatch_ids() for k in (3, 4)] == \
        [p.step_batch.batches.microbatch_ids() for p in plans[3:5]]
    with pytest.raises(RuntimeError, match="packs steps in order: step 9 asked, step 7"):
        planner.plan(8)
    late = CurriculumPacking(stream.config, SEQLENS, DatasetOrder(len(SEQLENS)),
                             planner.truncation_length, GBS, SEQ, first_step=4)
    assert late.step_batch(4).truncate == 32          # a resume whose state was not kept
    bounded = CurriculumPacking(stream.config, SEQLENS, DatasetOrder(len(SEQLENS)),
                                planner.truncation_length, GBS, SEQ, sample_limit=30,
                                train_iters=2)
    bounded.step_batch(0)
    with pytest.raises(BadConfigError, match=r"num_epochs: step 2 draws sample \d+ of the "
                                             "run, past the 30 that num_epochs passes"):
        bounded.step_batch(1)
    bounded.train_iters = 1
    bounded.step_batch(1)                     # past the run's end: prefetched, never trained
    short = CurriculumPacking(stream.config, SEQLENS, DatasetOrder(len(SEQLENS)),
                              planner.truncation_length, GBS, SEQ, history=2)
    for k in range(4):
        short.step_batch(k)
    with pytest.raises(ValueError, match="before step 1 is not kept"):
        short.state_dict(0)
    lens = np.array([10, 70, 30, 30, 10, 60, 10, 10, 10, 10] * 4)
    stream = CurriculumPacking(_curriculum_config(min_batch_size=2).dynamic_batching, lens,
                               DatasetOrder(len(lens)), lambda k: None, GBS, SEQ)
    units = stream.step_batch(0).batches.microbatch_ids()     # untruncated
    assert units[0] == [0, 2]           # 1 (70 > 64) left out
    assert units[1] == [3, 4]           # 30 + 10, 60 does not fit
    assert units[2] == [6, 7, 8, 9, 10]  # 5 alone (60) is below min_batch_size: left out
    assert units[3] == [12, 13] and stream.carried == 14
    lines: list[str] = []
    verbose = CurriculumPacking(_curriculum_config(verbose=True).dynamic_batching, lens,
                                DatasetOrder(len(lens)), lambda k: 32, GBS, SEQ, log=lines.append)
    batch = verbose.step_batch(0)
    assert lines == [f" > dynamic batching: step 1: {batch.samples} samples, {batch.tokens} "
                     f"tokens (truncated to 32), samples per unit "
                     f"{[len(u) for u in batch.batches.microbatch_ids()]}, 0 left out, ids "
                     f"{batch.sample_ids.tolist()}"]
    assert stream.step_batch(0).batches.left_out.tolist() == [1, 5, 11]
