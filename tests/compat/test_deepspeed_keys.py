"""Every key DeepSpeed 0.19.8's data_efficiency config knows (its
deepspeed/runtime/data_pipeline/constants.py) has a row in
megatron/data_efficiency/deepspeed_keys.py, the table the config reader takes its keys
from; each row does what it says: "acts" changes the parsed config (or refuses a value)
and names a test that proves the behaviour, "refused" is refused by name, "no-op" parses
to the same config, "not-a-key" names given in a config are refused. DeepSpeed's
documented data_efficiency example (docs/_pages/config-json.md) trains as written.

The stored constants (deepspeed_data_efficiency_constants.json) were read from the
deepspeed 0.19.8 sdist; with deepspeed installed the live module is checked too.
"""
import copy
import json
import os
import re
import sys

import numpy as np
import pytest

from megatron.data_efficiency import deepspeed_keys as dsk
from megatron.data_efficiency.config import config_from_dict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STORED = json.load(open(os.path.join(os.path.dirname(__file__),
                                     "deepspeed_data_efficiency_constants.json")))

# DeepSpeed's documented example (config-json page, "Data Efficiency"), as written there.
DOCUMENTED = {"data_efficiency": {
    "enabled": True, "seed": 1234,
    "data_routing": {"enabled": True, "random_ltd": {
        "enabled": True, "total_layer_num": 24, "random_ltd_layer_num": 22,
        "random_ltd_layer_id": list(range(1, 23)), "model_mask_name": "attention_mask",
        "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
        "random_ltd_schedule": {"min_value": 128, "max_value": 2048,
                                "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": 200000,
                                                    "seq_per_step": 16}}}},
    "data_sampling": {"enabled": True, "num_epochs": 1, "num_workers": 0,
                      "curriculum_learning": {
                          "enabled": True, "data_cluster_path": "/path/to/data_clusters",
                          "curriculum_metrics": {"vocabularyrarity": {
                              "index_to_sample_path": "/path/to/index_to_sample",
                              "index_to_metric_path": "/path/to/index_to_metric",
                              "difficulty_type": "percentile",
                              "clustering_type": "schedule_based",
                              "min_difficulty": 1, "max_difficulty": 100,
                              "schedule_type": "fixed_root",
                              "schedule_config": {"total_curriculum_step": 110000,
                                                  "difficulty_step": 1,
                                                  "root_degree": 2}}}}}}}
METRIC_NAME = "vocabularyrarity"


def _base() -> dict:
    """The documented config with its placeholder index paths naming files of an analyzer
    folder (parsed without reading them)."""
    d = copy.deepcopy(DOCUMENTED)
    m = d["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    m[METRIC_NAME].update(index_to_sample_path="/an/voc/sorted_samples.npy",
                          index_to_metric_path="/an/voc/sample_to_metric.npy")
    return d


def _set(d: dict, path: str, value) -> dict:
    """``d`` with the key at ``path`` (``*``: the metric) set, or removed for _REMOVE."""
    d = copy.deepcopy(d)
    *parents, key = path.replace("*", METRIC_NAME).split(".")
    node = d
    for k in parents:
        node = node.setdefault(k, {})
    if value is _REMOVE:
        node.pop(key, None)
    else:
        node[key] = value
    return d


_REMOVE = object()


def _outcome(d: dict):
    try:
        return "ok", config_from_dict(d, source="ds.json", seq_length=2048)
    except ValueError as err:
        return "error", str(err)


BASE = _outcome(_base())

_TRAINS = ("tests/bert/test_bert_dynamic_batching.py::"
           "test_dynamic_batching_trains_bert_with_deepspeeds_batches_and_lrs")
_DS_TABLE = ("tests/data_efficiency/compat/test_deepspeed_dynamic_batching.py::"
             "test_stored_deepspeed_table")
# "acts": a changed value and what it must do to the parsed config (or the error it gives),
# and the test that proves the behaviour in training or in the part it drives.
ACTS = {
    "data_efficiency.enabled": (False, "contradictory",
                                "tests/data_efficiency/test_config.py::"
                                "test_unknown_or_contradictory_keys_name_the_key"),
    "data_efficiency.seed": (7, lambda c: c.seed == 7, "tests/compat/test_deepspeed_compat.py::"
                             "test_data_efficiency_seed_seeds_the_run"),
    "data_efficiency.data_sampling.enabled": (False, "contradictory",
                                              "tests/data_efficiency/test_config.py::"
                                              "test_unknown_or_contradictory_keys_name_the_key"),
    "data_efficiency.data_sampling.num_epochs": (
        2, lambda c: c.num_epochs == 2,
        "tests/data_efficiency/test_runtime.py::test_num_epochs_bounds_the_samples_a_run_draws"),
    "data_efficiency.data_sampling.num_workers": (
        2, lambda c: c.num_workers == 2,
        "tests/compat/test_deepspeed_compat.py::test_data_efficiency_keys_checked"),
    "data_efficiency.data_sampling.pin_memory": (
        True, lambda c: c.pin_memory is True,
        "tests/compat/test_deepspeed_keys.py::test_pin_memory_is_the_training_loaders"),
    "data_efficiency.data_sampling.curriculum_learning.enabled": (
        False, lambda c: not c.curriculum.enabled,
        "tests/compat/test_deepspeed_keys.py::test_documented_config_trains"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*."
    "index_to_sample_path": ("/other/voc/sorted_samples.npy", "contradictory",
                             "tests/compat/test_deepspeed_compat.py::"
                             "test_deepspeed_index_is_read_directly_and_its_count_checked"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*."
    "index_to_metric_path": ("/other/voc/sample_to_metric.npy", "contradictory",
                             "tests/compat/test_deepspeed_compat.py::"
                             "test_deepspeed_index_is_read_directly_and_its_count_checked"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.index_path": (
        "/other/voc", "contradictory",
        "tests/data_efficiency/curriculum/test_curriculum_build.py::"
        "test_seqtru_voc_config_builds_sampler_and_transform"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.clustering_type": (
        "single_cluster", lambda c: c.curriculum.sampling_metrics == [],
        "tests/compat/test_deepspeed_keys.py::test_every_acting_key_changes_the_config"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.difficulty_type": (
        "value", lambda c: c.curriculum.metrics[0].difficulty_type == "value",
        "tests/data_efficiency/curriculum/test_curriculum_sampler.py::"
        "test_every_id_is_eligible_at_the_threshold_in_force"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.min_difficulty": (
        5, lambda c: c.curriculum.metrics[0].schedule.min_difficulty == 5,
        "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
        "test_stored_deepspeed_table"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.max_difficulty": (
        50, lambda c: c.curriculum.metrics[0].schedule.max_difficulty == 50,
        "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
        "test_stored_deepspeed_table"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_type": (
        "fixed_linear", "root_degree=2: contradicts schedule_type fixed_linear",
        "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
        "test_stored_deepspeed_table"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_config."
    "total_curriculum_step": (9, lambda c: c.curriculum.metrics[0].schedule
                              .total_curriculum_step == 9,
                              "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
                              "test_stored_deepspeed_table"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_config."
    "difficulty_step": (5, lambda c: c.curriculum.metrics[0].schedule.difficulty_step == 5,
                        "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
                        "test_stored_deepspeed_table"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_config."
    "root_degree": (3, lambda c: c.curriculum.metrics[0].schedule.root_degree == 3,
                    "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
                    "test_stored_deepspeed_table"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_config."
    "difficulty": ([1, 50], "contradicts schedule_type fixed_root, which does not read it",
                   "tests/data_efficiency/curriculum/test_curriculum_scheduler.py::"
                   "test_fixed_discrete_and_latch"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_config."
    "max_step": ([5], "contradicts schedule_type fixed_root, which does not read it",
                 "tests/data_efficiency/curriculum/test_curriculum_scheduler.py::"
                 "test_fixed_discrete_and_latch"),
    "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.schedule_config."
    "custom_function": ("math:isqrt", "contradicts schedule_type fixed_root, which",
                        "tests/data_efficiency/curriculum/test_curriculum_scheduler.py::"
                        "test_custom_function_by_import_path"),
    "data_efficiency.data_sampling.dynamic_batching.enabled": (
        True, "max_tokens: required when dynamic batching is enabled", _TRAINS),
    "data_efficiency.data_sampling.dynamic_batching.metrics_path": (
        "/an", lambda c: c.dynamic_batching.metrics_path == "/an", _TRAINS),
    "data_efficiency.data_sampling.dynamic_batching.max_tokens": (
        64, lambda c: c.dynamic_batching.max_tokens == 64, _DS_TABLE),
    "data_efficiency.data_sampling.dynamic_batching.min_batch_size": (
        2, lambda c: c.dynamic_batching.min_batch_size == 2, _DS_TABLE),
    "data_efficiency.data_sampling.dynamic_batching.max_batch_size": (
        3, lambda c: c.dynamic_batching.max_batch_size == 3, _DS_TABLE),
    "data_efficiency.data_sampling.dynamic_batching.sequence_picking_order": (
        "seqlen", lambda c: c.dynamic_batching.sequence_picking_order == "seqlen", _DS_TABLE),
    "data_efficiency.data_sampling.dynamic_batching.lr_scaling_method": (
        "sqrt", lambda c: c.dynamic_batching.lr_scaling_method == "sqrt", _DS_TABLE),
    "data_efficiency.data_sampling.dynamic_batching.verbose": (
        True, lambda c: c.dynamic_batching.verbose,
        "tests/data_efficiency/test_dynamic_batching.py::"
        "test_plans_are_the_packings_batches_and_each_dp_rank_takes_its_share"),
    "data_efficiency.data_routing.random_ltd.enabled": (
        False, lambda c: not c.random_ltd.enabled,
        "tests/compat/test_deepspeed_compat.py::test_recipe_shaped_config_is_read"),
    "data_efficiency.data_routing.random_ltd.model_type": (
        "encoder", lambda c: c.random_ltd.model_type == "encoder",
        "tests/compat/test_deepspeed_compat.py::test_random_ltd_model_type_must_be_the_model"),
    "data_efficiency.data_routing.random_ltd.hidden_state_order": (
        "batch_seq_dim", "only 'seq_batch_dim' is supported",
        "tests/compat/test_deepspeed_keys.py::test_every_acting_key_changes_the_config"),
    "data_efficiency.data_routing.random_ltd.random_ltd_layer_num": (
        21, "contradicts 22 ids",
        "tests/data_efficiency/random_ltd/test_random_ltd_schedule.py::test_from_deepspeed_dict"),
    "data_efficiency.data_routing.random_ltd.random_ltd_layer_id": (
        [1, 2], "contradicts 2 ids",
        "tests/compat/test_deepspeed_compat.py::test_recipe_shaped_config_is_read"),
    "data_efficiency.data_routing.random_ltd.total_layer_num": (
        12, lambda c: c.random_ltd.total_layer_num == 12,
        "tests/compat/test_deepspeed_compat.py::test_data_efficiency_keys_checked"),
    "data_efficiency.data_routing.random_ltd.random_ltd_schedule.max_value": (
        1024, lambda c: c.random_ltd.max_seqlen == 1024,
        "tests/data_efficiency/random_ltd/test_random_ltd_schedule.py::test_from_deepspeed_dict"),
    "data_efficiency.data_routing.random_ltd.random_ltd_schedule.min_value": (
        64, lambda c: c.random_ltd.min_seqlen == 64,
        "tests/data_efficiency/random_ltd/test_random_ltd_schedule.py::test_from_deepspeed_dict"),
    "data_efficiency.data_routing.random_ltd.random_ltd_schedule.schedule_type": (
        "fixed_root", "only 'fixed_linear' is supported",
        "tests/compat/test_deepspeed_keys.py::test_every_acting_key_changes_the_config"),
    "data_efficiency.data_routing.random_ltd.random_ltd_schedule.schedule_config."
    "seq_per_step": (8, lambda c: c.random_ltd.seq_per_step == 8,
                     "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
                     "test_stored_deepspeed_table"),
    "data_efficiency.data_routing.random_ltd.random_ltd_schedule.schedule_config."
    "require_steps": (10, lambda c: c.random_ltd.total_steps == 10,
                      "tests/data_efficiency/compat/test_deepspeed_schedules.py::"
                      "test_stored_deepspeed_table"),
}
# "refused" keys: a value that is not allowed (True for an enabled flag).
REFUSED_VALUE = {"enabled": True}
# "value" rows: the settings that make the value a valid choice at its key.
VALUE_CONTEXT = {
    "fixed_discrete": {"schedule_config": {"difficulty": [1, 100], "max_step": [5]}},
    "fixed_linear": {"schedule_config": {"total_curriculum_step": 5, "difficulty_step": 1}},
    "custom": {"schedule_config": {"custom_function": "math:isqrt"}},
}


def _constants(source: str) -> dict:
    if source == "stored":
        return STORED["constants"]
    constants = pytest.importorskip("deepspeed.runtime.data_pipeline.constants")
    return {k: getattr(constants, k) for k in dir(constants) if k.isupper()}


@pytest.mark.parametrize("source", ["stored", "live"])
def test_table_has_every_deepspeed_key_with_its_name_and_default(source):
    constants = _constants(source)
    names = {k for k in constants if not k.endswith("_DEFAULT")}
    assert len(names) > 70
    missing = sorted(names - set(dsk.BY_CONSTANT))
    assert not missing, f"DeepSpeed keys without a row in deepspeed_keys.py: {missing}"
    for name in names:
        row = dsk.BY_CONSTANT[name]
        if row.status in (dsk.VALUE, dsk.NOT_A_KEY) and not row.path:
            continue
        word = row.path.rsplit(".", 1)[-1] if row.status != dsk.VALUE else None
        assert row.status == dsk.VALUE or word == constants[name], (name, row.path)
        default = constants.get(name + "_DEFAULT", dsk._NONE)
        if row.status != dsk.VALUE:
            assert row.deepspeed_default is default or row.deepspeed_default == default, name
    if source == "live":
        import deepspeed
        if deepspeed.__version__ == STORED["deepspeed_version"]:
            assert constants == STORED["constants"]


def test_every_acting_key_changes_the_config():
    acting = {k.path for k in dsk.KEYS if k.status == dsk.ACTS}
    assert acting == set(ACTS), sorted(acting ^ set(ACTS))
    assert BASE[0] == "ok", BASE
    for path, (value, effect, proof) in ACTS.items():
        kind, got = _outcome(_set(_base(), path, value))
        if isinstance(effect, str):
            assert kind == "error" and effect in got, (path, got)
        else:
            assert kind == "ok" and got != BASE[1] and effect(got), (path, got)
        _assert_test_exists(proof)


def _assert_test_exists(node: str) -> None:
    path, name = node.split("::")
    text = open(os.path.join(ROOT, path)).read()
    assert re.search(rf"^def {name}\(", text, re.M), f"{node}: no such test"


def test_every_refused_key_is_refused_by_name():
    refused = [k for k in dsk.KEYS if k.status == dsk.REFUSED]
    assert len(refused) == 4         # layer_token_lr_schedule
    for row in refused:
        value = REFUSED_VALUE.get(row.key, 1)
        kind, msg = _outcome(_set(_base(), row.path, value))
        assert kind == "error" and row.path.split(".", 1)[1] in msg and "refused" in msg, msg
        for ok in row.allowed:                             # the value that does nothing
            assert _outcome(_set(_base(), row.path, ok)) == BASE, row.path


def test_no_op_keys_parse_to_the_same_config():
    rows = [k for k in dsk.KEYS if k.status == dsk.NO_OP]
    assert {k.key for k in rows} == {"data_cluster_path", "enabled", "model_mask_name"}
    for row in rows:
        assert row.note
        for value in ("/else", False, True, "mask"):
            if row.key == "enabled" and not isinstance(value, bool):
                continue
            assert _outcome(_set(_base(), row.path, value)) == BASE, (row.path, value)


def test_names_that_are_not_keys_are_refused_where_deepspeed_would_copy_them():
    rows = [k for k in dsk.KEYS if k.status == dsk.NOT_A_KEY]
    assert len(rows) == 16
    for row in (r for r in rows if r.path):
        kind, msg = _outcome(_set(_base(), row.path, 1))
        assert kind == "error" and "not a configuration key" in msg and row.key in msg, msg


def test_value_names_are_accepted_at_their_key():
    for row in (k for k in dsk.KEYS if k.status == dsk.VALUE):
        value = STORED["constants"][row.constant]
        d = _set(_base(), row.path, value)
        for key, extra in VALUE_CONTEXT.get(value, {}).items():
            d = _set(d, row.section + "." + key, extra)
        kind, got = _outcome(d)
        assert kind == "ok", (row.constant, got)


def test_absent_keys_behave_as_deepspeeds_defaults_or_say_why_not():
    for row in dsk.KEYS:
        if row.deepspeed_default is dsk._NONE or (row.status == dsk.REFUSED and not row.allowed):
            continue
        if row.default_here:
            assert row.default_here.startswith("absent:"), row.path
            continue
        absent = _outcome(_set(_base(), row.path, _REMOVE))
        given = _outcome(_set(_base(), row.path, row.deepspeed_default))
        assert absent == given, row.path


def test_num_epochs_and_pin_memory_values_are_checked():
    path = "data_efficiency.data_sampling."
    for key, bad in (("num_epochs", 0), ("num_epochs", -1), ("num_epochs", True),
                     ("num_epochs", "1"), ("pin_memory", 1), ("pin_memory", "yes")):
        kind, msg = _outcome(_set(_base(), path + key, bad))
        assert kind == "error" and f"data_sampling.{key}={bad!r}" in msg, msg
    assert _outcome(_set(_base(), path + "num_epochs", 0.5))[1].num_epochs == 0.5


def test_pin_memory_is_the_training_loaders(monkeypatch, tmp_path):
    """DataEfficiencyConfig.loader_pin_memory decides, the training loader gets it, and true
    without CUDA is refused before any step (on a GPU it pins)."""
    from megatron.data_efficiency.config import DataEfficiencyConfig
    from megatron.errors import BadConfigError
    for given, cuda, want in ((None, True, True), (None, False, False), (False, True, False),
                              (True, True, True), (False, False, False)):
        assert DataEfficiencyConfig(pin_memory=given).loader_pin_memory(cuda) is want
    with pytest.raises(BadConfigError, match="pin_memory true needs CUDA"):
        DataEfficiencyConfig(pin_memory=True).loader_pin_memory(False)
    import megatron.training_data as td
    seen = []
    real = td.build_pretraining_data_loader

    def spy(*a, **kw):
        loader = real(*a, **kw)
        seen.append(loader.pin_memory if loader is not None else None)
        return loader
    monkeypatch.setattr(td, "build_pretraining_data_loader", spy)
    for pin in (False, True):
        path = tmp_path / f"ds{pin}.json"
        path.write_text(json.dumps({"data_efficiency": {"data_sampling": {"pin_memory": pin}}}))
        if pin and not __import__("torch").cuda.is_available():
            with pytest.raises(BadConfigError, match="data_sampling.pin_memory true"):
                _tiny_run(tmp_path, "--data-efficiency-config", str(path))
        else:
            _tiny_run(tmp_path, "--data-efficiency-config", str(path))
            assert seen[0] is pin     # the training loader (the evaluation loaders follow)
        seen.clear()


def test_num_epochs_is_checked_before_the_first_step(tmp_path):
    """pretrain hands the run's length to the check (the bound itself:
    tests/data_efficiency/test_runtime.py::test_num_epochs_bounds_the_samples_a_run_draws)."""
    from megatron.errors import BadConfigError
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"data_efficiency": {"data_sampling": {"num_epochs": 0.001}}}))
    with pytest.raises(BadConfigError, match=r"num_epochs 0.001: the run draws 4 training "
                                             r"samples, but .* allow 0.\d+ .*: 2\)"):
        _tiny_run(tmp_path, "--data-efficiency-config", str(path), "--train-iters", "2")


def _store(prefix: str, tokens: int, vocab: int) -> None:
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
    rng = np.random.default_rng(0)
    b = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    done = 0
    while done < tokens:
        doc = np.minimum(rng.zipf(1.3, size=int(rng.integers(200, 3000))), vocab - 2)
        b.add_document(np.append(doc, vocab - 1), [len(doc) + 1])
        done += len(doc) + 1
    b.finalize(prefix + ".idx")


def _tiny_run(tmp_path, *extra):
    from megatron.core.enums import ModelType
    from megatron.training import pretrain
    import pretrain_gpt
    prefix = str(tmp_path / "small")
    if not os.path.exists(prefix + ".idx"):
        _store(prefix, 3000, 64)
    return pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                    ModelType.encoder_or_decoder, pretrain_gpt.forward_step, argv=[
                        "--num-layers", "1", "--hidden-size", "8", "--num-attention-heads", "1",
                        "--seq-length", "16", "--max-position-embeddings", "16",
                        "--micro-batch-size", "2", "--global-batch-size", "2",
                        "--train-iters", "1", "--lr", "1e-3", "--vocab-size", "64",
                        "--data-path", prefix, "--split", "100,0,0", "--num-workers", "0",
                        "--eval-iters", "0", "--log-interval", "1", *extra])


def test_documented_config_trains(tmp_path):
    """DeepSpeed's documented example, placeholders filled: a DeepSpeed DataAnalyzer index
    of the run's training samples, a cluster folder (never written to here); 24 layers,
    2048 tokens (its total_layer_num and max_value), num_epochs 1, num_workers 0."""
    from megatron.arguments import run_config
    from megatron.core.enums import ModelType
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    from megatron.data_efficiency.analyzer import deepspeed_index as dsi
    from megatron.run_plan import plan_run
    from megatron.training import pretrain
    import pretrain_gpt
    prefix, vocab = str(tmp_path / "corpus"), 64
    _store(prefix, 260_000, vocab)       # > 100 samples: the first 1% percentile holds one
    argv = ["--num-layers", "24", "--hidden-size", "16", "--num-attention-heads", "2",
            "--seq-length", "2048", "--max-position-embeddings", "2048",
            "--micro-batch-size", "1", "--global-batch-size", "2", "--train-iters", "2",
            "--lr", "1e-3", "--vocab-size", str(vocab), "--data-path", prefix,
            "--split", "100,0,0", "--seed", "1234", "--num-workers", "0", "--eval-iters", "0",
            "--log-interval", "1"]
    sizes = plan_run(run_config(argv)).train_valid_test_num_samples
    train, _, _ = build_train_valid_test_datasets([prefix], "100,0,0", list(sizes), 2048, 1234)
    values = np.random.default_rng(1).integers(0, 50, len(train))
    ds_prefix = str(tmp_path / "analysis" / "vocab_rarity")
    os.makedirs(os.path.dirname(ds_prefix))
    uniq = np.unique(values)
    dsi.write_deepspeed_rows(ds_prefix + dsi.SAMPLE_SUFFIX,
                             [np.flatnonzero(values == v) for v in uniq], np.uint32)
    dsi.write_deepspeed_rows(ds_prefix + dsi.METRIC_SUFFIX, [[v] for v in uniq], np.uint32)
    config = json.loads(json.dumps(DOCUMENTED).replace(
        "/path/to/index_to_sample", ds_prefix + dsi.SAMPLE_SUFFIX).replace(
        "/path/to/index_to_metric", ds_prefix + dsi.METRIC_SUFFIX).replace(
        "/path/to/data_clusters", str(tmp_path / "clusters")))
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(config))
    state = pretrain(pretrain_gpt.train_valid_test_datasets_provider, pretrain_gpt.model_provider,
                     ModelType.encoder_or_decoder, pretrain_gpt.forward_step,
                     argv=argv + ["--deepspeed", "--deepspeed_config", str(path)])
    assert state.iteration == 2 and all(np.isfinite(loss) for _, loss in state.history)
    assert not os.path.exists(tmp_path / "clusters")      # data_cluster_path: a no-op
