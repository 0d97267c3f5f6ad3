"""Shared multi-rank spawns for the whole session. Starting ranks (processes importing torch
and the project) is the slow part of a distributed test, so every collected test module
that defines ``two_rank_jobs(tmp_path_factory)`` (or ``four_rank_jobs``) ``-> {name:
(worker, *args)}`` has its jobs run in one 2-rank (4-rank) spawn, one after the other on the
same ranks (``worker(rank, world_size, *args)``; model-parallel groups and the
tensor-parallel RNG tracker cleared between jobs). A test reads ``two_rank_spawn[name]``
(``four_rank_spawn[name]``): the job's results, indexed by rank. Only the modules collected
in the session contribute, so a targeted run starts only its own jobs."""
from __future__ import annotations

import pytest

from tests.dist_utils import isolated_jobs, run_distributed


def _shared_spawn(request, tmp_path_factory, world_size: int, hook: str) -> dict:
    modules = []
    for item in request.session.items:
        if hasattr(item.module, hook) and item.module not in modules:
            modules.append(item.module)
    named: dict[str, tuple] = {}
    for module in modules:
        for name, job in getattr(module, hook)(tmp_path_factory).items():
            if name in named:
                raise ValueError(f"{hook}: job {name!r} is defined twice")
            named[name] = job
    per_rank = run_distributed(isolated_jobs, world_size, list(named.values()), timeout_s=600)
    return {name: [r[i] for r in per_rank] for i, name in enumerate(named)}


@pytest.fixture(scope="session")
def two_rank_spawn(request, tmp_path_factory) -> dict:
    return _shared_spawn(request, tmp_path_factory, 2, "two_rank_jobs")


@pytest.fixture(scope="session")
def four_rank_spawn(request, tmp_path_factory) -> dict:
    return _shared_spawn(request, tmp_path_factory, 4, "four_rank_jobs")


def pytest_collection_modifyitems(config, items):
    """``make test`` runs two pytest-xdist workers with ``--dist loadgroup``: a group goes
    to one worker whole. Each test file is its own group, so a module-scoped fixture (a
    study, a trained checkpoint) is built once; the modules that share the multi-rank
    spawns above form one group, so those spawns start once, not once per worker."""
    for item in items:
        module = getattr(item, "module", None)
        shares_spawn = any(hasattr(module, hook) for hook in ("two_rank_jobs", "four_rank_jobs"))
        group = "shared-spawns" if shares_spawn else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
