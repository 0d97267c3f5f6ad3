"""A curriculum over a blended --data-path, end to end: tools/analyze_data.py indexes the
blend training builds (sized by the run's own flags), pretrain_gpt.py draws the
curriculum from it with random-LTD on, DP2 draws the same samples as one process,
a resumed run continues bit-exactly, and an index of another blend is refused naming
what differs."""
from __future__ import annotations

import os

import numpy as np
import pytest

from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer.index_io import MetricIndex, percentile_prefix
from megatron.data_efficiency.curriculum.scheduler import CurriculumScheduler, ScheduleConfig
from tests.tools.tool_loader import load_tool

# the runs are planned for PLANNED steps (the blend holds PLANNED * GBS samples: enough for
# DeepSpeed's percentile arithmetic, N // 100 * p) and stop after ITERS (--exit-interval)
VOCAB, SEQ, GBS, ITERS, PLANNED, SEED = 64, 32, 4, 6, 100, 11
# CL seqtru (8 -> 32) + voc (easiest 10% -> 100%, root) over 4 steps, random-LTD on
CL = ["--data-efficiency-curriculum-learning", "--curriculum-metric", "seqtru", "voc",
      "--curriculum-difficulty-type", "value", "percentile",
      "--curriculum-min-difficulty", "8", "10", "--curriculum-max-difficulty", str(SEQ), "100",
      "--curriculum-schedule-type", "fixed_linear", "fixed_root",
      "--curriculum-total-steps", "4", "--curriculum-difficulty-step", "8", "1",
      "--curriculum-root-degree", "1", "2",
      "--random-ltd", "--random-ltd-min-seqlen", "8", "--random-ltd-total-steps", "4",
      "--random-ltd-seq-per-step", "8"]
_DATA: dict = {}


def _store(prefix: str, seed: int, n_docs: int, skew: float) -> str:
    rng = np.random.default_rng(seed)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(n_docs):
        doc = np.minimum(rng.zipf(skew, size=int(rng.integers(5, 80))), VOCAB - 2)
        builder.add_item(np.append(doc, VOCAB - 1))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


def _blend_data(tmp_path_factory) -> dict:
    """Two stores of different rarity, blended 0.3 / 0.7, and the analyzer's voc index of
    the blend, sized by the training run's own flags (built once per session)."""
    if not _DATA:
        root = str(tmp_path_factory.mktemp("blend_cl"))
        a = _store(os.path.join(root, "a"), 1, 150, 1.3)
        b = _store(os.path.join(root, "b"), 2, 200, 2.0)
        data_path = ["0.3", a, "0.7", b]
        index = os.path.join(root, "index")
        sizing = ["--train-iters", str(PLANNED), "--global-batch-size", str(GBS),
                  "--num-layers", "4", "--eval-interval", "100", "--eval-iters", "1", *CL,
                  "--curriculum-index-path", "-", os.path.join(index, "voc")]
        assert load_tool("analyze_data").main(
            ["--data-path", *data_path, "--granularity", "sample", "--split", "90,10,0",
             "--seq-length", str(SEQ), "--seed", str(SEED), "--metrics", "total_vocab_freq",
             "voc", "--save-path", index, "--quiet", *sizing]) == 0
        _DATA.update(root=root, data_path=data_path, index=os.path.join(index, "voc"))
    return _DATA


@pytest.fixture(scope="module")
def blend_data(tmp_path_factory):
    return _blend_data(tmp_path_factory)


def _flags(data, *extra, index=None, workers=None):
    """``workers=None``: the default --num-workers (2, a prefetching loader)."""
    loader = [] if workers is None else ["--num-workers", workers]
    return ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
            "--micro-batch-size", "2", "--global-batch-size", str(GBS),
            "--train-iters", str(PLANNED), "--exit-interval", str(ITERS), "--lr", "3e-3",
            "--min-lr", "3e-4",
            "--lr-warmup-iters", "2", "--vocab-size", str(VOCAB),
            "--make-vocab-size-divisible-by", "8", "--data-path", *data["data_path"],
            "--split", "90,10,0", "--seed", str(SEED), *loader,
            "--log-interval", "1", "--eval-interval", "100", "--eval-iters", "1",
            "--hidden-dropout", "0.1", "--attention-dropout", "0", "--use-cpu-initialization",
            *CL, "--curriculum-index-path", "-", index or data["index"], *extra]


def _train(flags: list[str]) -> tuple[list[list[int]], set[int], list]:
    """(this rank's blend sample ids of each training step, the stores they came from,
    the loss history)."""
    import torch.distributed as dist
    import pretrain_gpt
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    per_rank = GBS // (dist.get_world_size() if dist.is_initialized() else 1)
    steps: list[list[int]] = []
    stores: set[int] = set()

    def forward_step(data_iterator, model):
        def recorded():
            for batch in data_iterator:
                if model.training:
                    if not steps or len(steps[-1]) == per_rank:
                        steps.append([])
                    steps[-1].extend(batch["sample_id"].tolist())
                    stores.update(batch["dataset_id"].tolist())
                yield batch
        return pretrain_gpt.forward_step(recorded(), model)

    state = pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                     ModelType.encoder_or_decoder, forward_step, argv=flags)
    return steps, stores, state.history


def _dp_worker(rank: int, world_size: int, data: dict) -> tuple:
    return _train(_flags(data, workers="0"))


def two_rank_jobs(tmp_path_factory) -> dict:
    return {"blend_cl_dp2": (_dp_worker, _blend_data(tmp_path_factory))}


@pytest.fixture(scope="module")
def straight(blend_data):
    """The uninterrupted run at DP1, with the default prefetching loader."""
    return _train(_flags(blend_data))


def test_the_curriculum_draws_the_blends_samples_easiest_first(blend_data, straight):
    steps, stores, history = straight
    assert len(steps) == ITERS and all(len(ids) == GBS for ids in steps)
    assert stores == {0, 1} and all(np.isfinite([loss for _, loss in history]))
    index = MetricIndex.open(blend_data["index"])
    assert index.num_samples == PLANNED * GBS and len(index.meta["blend"]) == 2
    voc = CurriculumScheduler(ScheduleConfig("fixed_root", 10, 100, 4, 1, 2))
    for step, ids in enumerate(steps, start=1):
        admitted = index.sorted_samples[:percentile_prefix(index.num_samples,
                                                           voc.difficulty_at(step))]
        assert set(ids) <= set(admitted.tolist()), step


@pytest.mark.slow
def test_dp2_draws_the_samples_of_one_process(straight, two_rank_spawn):
    """Each DP rank trains its share of every global batch (Megatron's order: micro-batch
    m of rank r is ids [m*mbs*dp + r*mbs, ...)), together the one-process batch."""
    (rank0, _, _), (rank1, _, history) = two_rank_spawn["blend_cl_dp2"]
    assert [a + b for a, b in zip(rank0, rank1)] == straight[0]
    assert len(history) == ITERS and all(np.isfinite([loss for _, loss in history]))


def test_resume_mid_curriculum_continues_bit_exactly(blend_data, straight, tmp_path):
    save = str(tmp_path / "ckpt")
    _train(_flags(blend_data, "--save", save, "--save-interval", "3", "--exit-interval", "3"))
    steps, _, history = _train(_flags(blend_data, "--load", save, "--save", save,
                                      "--save-interval", "100"))
    assert steps == straight[0][3:]
    assert [loss for _, loss in history] == [loss for _, loss in straight[2][3:]]


@pytest.mark.parametrize("data_path, named", [
    (lambda a, b: ["0.5", a, "0.5", b], "the index's weights are [0.3, 0.7], this run's [0.5, 0.5]"),
    (lambda a, b: [b], "the index numbers a blend of 2 stores"),
])
def test_an_index_of_another_blend_is_refused_naming_the_difference(blend_data, data_path,
                                                                     named):
    from megatron.data_efficiency.data_family import IndexMismatchError
    a, b = blend_data["data_path"][1::2]
    other = dict(blend_data, data_path=data_path(a, b))
    with pytest.raises(IndexMismatchError) as err:
        _train(_flags(other))
    assert named in str(err.value) and "tools/analyze_data.py --data-path " in str(err.value)
