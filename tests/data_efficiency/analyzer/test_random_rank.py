"""The random control metric of the pruning arms: a pure function of each sample's tokens,
uniform in [0, 1), so a window [0, 50] over it keeps a random half."""
import numpy as np

from megatron.data_efficiency.analyzer.metrics import evaluate_user_metric
from megatron.data_efficiency.analyzer.valuation import random_rank


def test_random_rank_depends_only_on_each_samples_tokens_and_is_uniform():
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 40, size=4000)   # no two samples alike
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(0, 5000, size=int(offsets[-1])).astype(np.uint16)
    whole = evaluate_user_metric(random_rank, "random", tokens, offsets, 0)
    # the same samples in two other batches, and one sample alone, give the same values
    cut = 1234
    first = random_rank(tokens[:offsets[cut]], offsets[:cut + 1])
    rest = random_rank(tokens[offsets[cut]:], offsets[cut:] - offsets[cut])
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)
    k = 77
    assert random_rank(tokens[offsets[k]:offsets[k + 1]].copy(), np.array([0, lengths[k]]))[0] \
        == whole[k]
    assert whole.dtype == np.float64 and 0 <= whole.min() and whole.max() < 1
    assert len(np.unique(whole)) == len(whole)
    counts = np.histogram(whole, bins=10, range=(0, 1))[0]
    assert counts.min() > 330 and counts.max() < 470    # 400 expected per bin
    # unrelated to difficulty: no correlation with the sample's length
    assert abs(np.corrcoef(whole, lengths)[0, 1]) < 0.05
