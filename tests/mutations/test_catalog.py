"""make mutate's catalog follows the code (every planted snippet occurs exactly once, the
named tests exist), and planting works on a scratch copy only: the working tree is never
edited."""
from __future__ import annotations

import hashlib
import os

from tests.mutations import mutate
from tests.mutations.catalog import MUTATIONS, Mutation


def test_catalog_matches_the_tree():
    assert not mutate.check_catalog(), "\n".join(mutate.check_catalog())
    assert len(MUTATIONS) >= 33
    for name in ("lr-on-nominal-tokens", "eval-uses-step-plan", "sampler-cluster-edge",
                 "seqreo-tokens-max-over-dp", "train-tokens-boundary"):
        assert any(m.name == name for m in MUTATIONS), name


def _digest(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_planting_edits_only_the_scratch_copy(tmp_path):
    m = next(m for m in MUTATIONS if m.name == "train-tokens-boundary")
    real = os.path.join(mutate.ROOT, m.file)
    before = _digest(real)
    tree = str(tmp_path / "tree")
    os.makedirs(tree)
    src = os.path.join(tree, m.file)
    os.makedirs(os.path.dirname(src))
    with open(real) as f, open(src, "w") as g:
        g.write(f.read())
    original = mutate.apply(tree, m)
    assert m.edits[0][1] in open(src).read() and m.edits[0][0] not in open(src).read()
    mutate.restore(tree, m, original)
    assert _digest(src) == before == _digest(real)
    stale = Mutation("stale", m.file, (("no such snippet", "x"),), m.tests, "")
    assert mutate.check_catalog(mutations=[stale])
    assert [mutate.outcome(c) for c in (0, 1, 2, None)] == ["SURVIVED", "caught", "error",
                                                            "error"]
