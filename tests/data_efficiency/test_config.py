"""Data-efficiency config: DeepSpeed-shaped JSON and Megatron-style flags."""
import argparse
import copy
import json

import pytest

from megatron.data_efficiency.random_ltd import add_random_ltd_args
from megatron.data_efficiency.config import config_from_dict, load_config_file
from megatron.data_efficiency.config_flags import add_curriculum_args, config_from_args

VOC = {"index_to_sample_path": "/data/an/voc/sorted_samples.npy",
       "index_to_metric_path": "/data/an/voc/sample_to_metric.npy",
       "difficulty_type": "percentile", "clustering_type": "schedule_based",
       "min_difficulty": 1, "max_difficulty": 100, "schedule_type": "fixed_root",
       "schedule_config": {"total_curriculum_step": 110000, "difficulty_step": 1,
                           "root_degree": 2}}
SEQTRU = {"index_to_sample_path": "dummy", "index_to_metric_path": "dummy",
          "difficulty_type": "value", "clustering_type": "single_cluster",
          "min_difficulty": 80, "max_difficulty": 2048, "schedule_type": "fixed_linear",
          "schedule_config": {"total_curriculum_step": 110000, "difficulty_step": 8}}
DS_CONFIG = {
    "train_batch_size": 512, "train_micro_batch_size_per_gpu": 4,
    "data_efficiency": {
        "enabled": True, "seed": 1234,
        "data_sampling": {"enabled": True, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": "/tmp/clusters",
            "curriculum_metrics": {"vocabularyrarity": VOC, "seqlen_truncate": SEQTRU}}},
        "data_routing": {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": 24, "random_ltd_layer_num": 22,
            "random_ltd_layer_id": list(range(1, 23)), "model_mask_name": "attention_mask",
            "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
            "random_ltd_schedule": {"min_value": 128, "max_value": 2048,
                                    "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": 200000,
                                                        "seq_per_step": 16}}}}}}


def test_whole_deepspeed_config_seqtru_voc(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(DS_CONFIG))
    cfg = load_config_file(str(path), seq_length=2048)
    cl = cfg.curriculum
    assert cfg.enabled and cl.enabled and cfg.seed == 1234
    voc = cl.sampling_metrics[0]
    assert voc.name == "vocabularyrarity" and voc.index_path == "/data/an/voc"
    assert voc.schedule.root_degree == 2 and voc.difficulty_type == "percentile"
    assert cl.transform_metric.kind == "seqtru" and cl.transform_metric.schedule.difficulty_step == 8
    assert cl.transform_for("gpt") == "seqtru"
    assert cfg.random_ltd.enabled and cfg.random_ltd.min_seqlen == 128   # H6's RandomLTDConfig
    # The section alone parses to the same curriculum.
    alone = config_from_dict(DS_CONFIG["data_efficiency"])
    assert alone.curriculum == cl


def test_legacy_curriculum_section_is_seqtru():
    cfg = config_from_dict({"train_batch_size": 8, "curriculum_learning": {
        "enabled": True, "curriculum_type": "seqlen", "min_difficulty": 8,
        "max_difficulty": 1024, "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 1000, "difficulty_step": 8}}})
    assert cfg.curriculum.transform_for("gpt") == "seqtru"
    assert cfg.curriculum.metrics[0].schedule.max_difficulty == 1024


def _with(path, value):
    d = copy.deepcopy(DS_CONFIG)
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


METRICS = ("data_efficiency", "data_sampling", "curriculum_learning", "curriculum_metrics")


@pytest.mark.parametrize("d, msg", [
    (_with(METRICS + ("vocabularyrarity", "schedule_config", "root_degre"), 2),
     r"curriculum_metrics\.vocabularyrarity\.schedule_config\.root_degre: unknown key"),
    (_with(("data_efficiency", "data_sampling", "curriculum_learning", "clusters"), 1),
     r"curriculum_learning\.clusters: unknown key"),
    (_with(METRICS + ("seqlen_reshape",), SEQTRU), "contradictory"),
    (_with(METRICS + ("vocabularyrarity", "index_path"), "/elsewhere/voc"), "contradictory"),
    (_with(METRICS + ("seqlen_truncate", "difficulty_type"), "percentile"), "contradicts"),
    (_with(("data_efficiency", "data_sampling", "enabled"), False), "contradictory"),
    (_with(METRICS + ("vocabularyrarity", "max_difficulty"), 150), "percentile"),
    (_with(("data_efficiency", "enabled"), False), "contradictory"),
    (_with(("data_efficiency", "seed2"), 1), r"data_efficiency\.seed2: unknown key"),
])
def test_unknown_or_contradictory_keys_name_the_key(d, msg):
    with pytest.raises(ValueError, match=msg):
        config_from_dict(d, source="ds.json")


def test_missing_deepspeed_analyzer_files_are_named():
    voc = dict(VOC, index_to_sample_path="/x/vocab_rarity_index_to_sample_percentile_merged")
    voc.pop("index_to_metric_path")
    with pytest.raises(ValueError, match="/x/vocab_rarity_index_to_sample.idx"):
        config_from_dict(_with(METRICS + ("vocabularyrarity",), voc))


def parse(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--num-layers", type=int, default=24)
    add_curriculum_args(p)
    add_random_ltd_args(p)
    return p.parse_args(argv)


@pytest.mark.parametrize("transform", ["seqtru", "seqres"])
def test_flags_for_seqtru_voc_and_seqres_voc(transform):
    args = parse(["--data-efficiency-curriculum-learning", "--curriculum-metric", transform, "voc",
                  "--curriculum-index-path", "/an/voc", "--curriculum-min-difficulty", "80", "1",
                  "--curriculum-max-difficulty", "2048", "100",
                  "--curriculum-schedule-type", "fixed_linear", "fixed_root",
                  "--curriculum-total-steps", "1000", "--curriculum-difficulty-step", "8", "1",
                  "--curriculum-root-degree", "1", "2", "--seed", "9"])
    cfg = config_from_args(args)
    cl = cfg.curriculum
    assert cfg.seed == 9 and cl.transform_for("gpt") == transform
    t, voc = cl.metrics
    assert (t.kind, t.difficulty_type, t.schedule.min_difficulty, t.schedule.difficulty_step) == \
        (transform, "value", 80, 8)
    assert (voc.index_path, voc.difficulty_type, voc.schedule.schedule_type,
            voc.schedule.root_degree, voc.schedule.total_curriculum_step) == \
        ("/an/voc", "percentile", "fixed_root", 2, 1000)


def test_flag_errors():
    with pytest.raises(ValueError, match="--curriculum-min-difficulty"):
        config_from_args(parse(["--data-efficiency-curriculum-learning", "--curriculum-metric",
                                "seqtru", "voc", "--curriculum-min-difficulty", "1", "2", "3"]))
    with pytest.raises(ValueError, match="needs --data-efficiency-curriculum-learning"):
        config_from_args(parse(["--curriculum-metric", "seqtru"]))
    assert not config_from_args(parse([])).curriculum.enabled


def test_random_ltd_in_the_file_and_by_flags_is_refused_once(tmp_path):
    import json
    path = tmp_path / "de.json"
    path.write_text(json.dumps({"enabled": True, "data_routing": {"enabled": True, "random_ltd": {
        "enabled": True, "random_ltd_schedule": {"min_value": 128, "max_value": 2048,
        "schedule_config": {"require_steps": 10, "seq_per_step": 16}}}}}))
    cfg = config_from_args(parse(["--data-efficiency-config", str(path)]))
    assert cfg.random_ltd.enabled and cfg.random_ltd.total_steps == 10
    with pytest.raises(ValueError, match="give it in one place"):
        config_from_args(parse(["--data-efficiency-config", str(path), "--random-ltd",
                                "--random-ltd-total-steps", "5"]))
    flags = config_from_args(parse(["--random-ltd", "--random-ltd-total-steps", "5"]))
    assert flags.random_ltd.enabled and not flags.curriculum.enabled
