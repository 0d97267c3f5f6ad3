"""Split strings, blend parsing and Megatron's greedy blending indices."""

import numpy as np
import pytest

from megatron.data import dataset_utils as du
from megatron.data.blendable_dataset import BlendableDataset


@pytest.mark.parametrize("split,size,want", [
    ("969,30,1", 1000, [0, 969, 999, 1000]),
    ("8,1,1", 10, [0, 8, 9, 10]),
    ("1,1,1", 10, [0, 4, 7, 10]),      # Megatron moves the rounding error onto the boundaries
    ("949,50,1", 33, [0, 31, 33, 33]),  # each split rounded (1.65 -> 2), not truncated
    ("98/2", 7, [0, 7, 7, 7]),
    ("100", 3, [0, 3, 3, 3]),
])
def test_split_ranges(split, size, want):
    assert du.get_train_valid_test_split_(split, size) == want


@pytest.mark.parametrize("bad", ["", "a,b", "1,2,3,4", "0,0,0", "-1,2"])
def test_bad_split_strings(bad):
    with pytest.raises(ValueError, match="--split"):
        du.parse_splits_string(bad)


def test_blend_parsing():
    prefixes, weights, nums = du.get_datasets_weights_and_num_samples(
        ["1", "a", "3", " b "], [1000, 100, 0])
    assert prefixes == ["a", "b"] and weights == [0.25, 0.75]
    assert nums == [[252, 26, 0], [754, 76, 0]]  # ceil(n * w * 1.005)
    with pytest.raises(ValueError, match="weight/prefix pairs"):
        du.get_datasets_weights_and_num_samples(["1", "a", "2"], [1, 1, 1])
    with pytest.raises(ValueError, match="not a weight"):
        du.get_datasets_weights_and_num_samples(["a", "1"], [1, 1, 1])


def test_blending_greedy_small():
    which, index = du.build_blending_indices([0.5, 0.5], 6)
    assert which.tolist() == [0, 1, 0, 1, 0, 1] and index.tolist() == [0, 0, 1, 1, 2, 2]
    which, _ = du.build_blending_indices([1, 1, 2], 8)
    assert which.tolist() == [2, 0, 1, 2, 0, 2, 1, 2]  # worked by hand; step 4 is a 3-way tie


def test_two_dataset_fast_path_equals_greedy_loop():
    rng = np.random.default_rng(0)
    for w in [[0.5, 0.5], [1, 2], [1e-3, 1], [0, 1], [1, 0]] + [rng.random(2) for _ in range(8)]:
        w = np.asarray(w, dtype=np.float64) / np.sum(w)
        np.testing.assert_array_equal(du._blend_two(w, 5000, window=512),
                                      du._blend_loop(w.tolist(), 5000))


class _Range:
    def __init__(self, n, tag):
        self.n, self.tag = n, tag

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"text": np.array([self.tag, i]), "sample_id": i}


def test_blendable_dataset():
    blend = BlendableDataset([_Range(40, 0), _Range(80, 1)], [1, 2], 100)
    tags = [blend[i]["text"][0] for i in range(100)]
    assert abs(np.mean(tags) - 2 / 3) < 0.02 and blend[37]["sample_id"] == 37
    per_dataset = [[int(blend[i]["text"][1]) for i in range(100) if tags[i] == d] for d in (0, 1)]
    assert all(p == list(range(len(p))) for p in per_dataset)
    with pytest.raises(ValueError, match="dataset 0 has 10 samples"):
        BlendableDataset([_Range(10, 0), _Range(80, 1)], [1, 2], 100)
