"""One 2-rank spawn shared by the 2-rank tests of this folder: the 1F1B / data-parallel toy
(test_pipeline_toy), the ZeRO-1 toy (test_distributed_optimizer_toy), the TP2 checkpoint
the converter tests read (test_checkpoint_util), the GPT layouts (test_gpt_layouts),
pretrain() runs (test_pretrain_e2e) and pretrain() under a simulated CUDA device
(test_device_discipline). Starting ranks is the slow part, so they run one
after the other on the same two ranks; each test then checks its own part."""
from __future__ import annotations

import pytest

from tests.dist_utils import run_distributed
from tests.parallel.gpt_harness import jobs_worker


@pytest.fixture(scope="session")
def two_rank_spawn(tmp_path_factory) -> dict:
    """Per-rank results of each job (lists indexed by rank), the TP2 checkpoint as
    ``(folder, whole-model state dict it was split from)`` and the pretrain runs' folder."""
    from tests.parallel import test_checkpoint_util as ckpt
    from tests.parallel import test_device_discipline as devices
    from tests.parallel import test_distributed_optimizer_toy as zero
    from tests.parallel import test_gpt_layouts as layouts
    from tests.parallel import test_pipeline_toy as toy
    from tests.parallel import test_pretrain_e2e as e2e
    from tests.parallel.gpt_harness import layouts_worker
    full, specs = ckpt.reference_weights()
    save_dir = str(tmp_path_factory.mktemp("ckpt") / "tp2")
    e2e_folder = str(tmp_path_factory.mktemp("e2e"))
    jobs = [(toy.worker,), (zero.worker,), (ckpt.save_tp2, save_dir, full, specs),
            (layouts_worker, layouts.TWO_RANKS), e2e.two_rank_job(e2e_folder),
            devices.job(str(tmp_path_factory.mktemp("devices")))]
    per_rank = run_distributed(jobs_worker, 2, jobs, timeout_s=400)
    names = ("pipeline", "distopt", None, "layouts", "e2e", "devices")
    out = {name: [r[i] for r in per_rank] for i, name in enumerate(names) if name}
    return {**out, "tp2_checkpoint": (save_dir, full), "e2e_folder": e2e_folder}
