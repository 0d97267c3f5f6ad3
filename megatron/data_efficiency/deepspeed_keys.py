"""Every key of DeepSpeed 0.19.8's ``data_efficiency`` config and what it does here.

One table, keyed by DeepSpeed's constant name (``deepspeed/runtime/data_pipeline/
constants.py``), is the home of the rule for each key: the config reader takes the keys
it knows in each section from it (``check_section``), refuses by name the keys marked
refused (with the reason written here), and the compatibility test
(``tests/compat/test_deepspeed_keys.py``) checks the table against DeepSpeed's own
constants, stored and live. Statuses:

* ``acts``: read and changes behaviour (a test elsewhere proves it); where ``allowed`` is
  given, another value is refused;
* ``refused``: an error naming the key and the reason, unless its value is one of
  ``allowed`` (the value that does nothing in DeepSpeed either, e.g. ``enabled: false``);
* ``no-op``: accepted and documented as doing nothing here, with why;
* ``section``: an object whose keys have their own rows;
* ``value``: not a key but a value of the key ``path`` names;
* ``not-a-key``: a name DeepSpeed uses for its run-time state or files; given in a config
  section (``path``, where DeepSpeed would copy it) it is refused with the note.

Paths start at the top of a DeepSpeed config; ``*`` stands for a curriculum metric name.
Rows without a constant are this project's additions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTS, REFUSED, NO_OP, SECTION, VALUE, NOT_A_KEY = (
    "acts", "refused", "no-op", "section", "value", "not-a-key")
_NONE = object()


@dataclass(frozen=True)
class DeepSpeedKey:
    """One row: DeepSpeed's ``constant``, its ``path``, its ``status`` here and why.

    ``deepspeed_default`` is DeepSpeed's ``<constant>_DEFAULT`` where it has one; when
    ``default_here`` is empty an absent key behaves as that default, otherwise
    ``default_here`` says what an absent key means here.
    """
    constant: str | None
    path: str
    status: str
    note: str
    allowed: tuple = ()
    deepspeed_default: Any = _NONE
    default_here: str = ""

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def section(self) -> str:
        return self.path.rsplit(".", 1)[0]


DE = "data_efficiency"
SAMPLING = DE + ".data_sampling"
CL = SAMPLING + ".curriculum_learning"
METRIC = CL + ".curriculum_metrics.*"
SCHEDULE = METRIC + ".schedule_config"
BATCHING = SAMPLING + ".dynamic_batching"
ROUTING = DE + ".data_routing"
LTD = ROUTING + ".random_ltd"
LTD_SCHEDULE = LTD + ".random_ltd_schedule"
LTD_SCHEDULE_CONFIG = LTD_SCHEDULE + ".schedule_config"
LTD_LR = LTD + ".layer_token_lr_schedule"

_LAYER_TOKEN_LR = ("refused: the layer-token LR schedule is not built (DeepSpeed raises "
                   "'not yet support' when it is enabled); schedule the LR on consumed "
                   "tokens with --lr-warmup-tokens / --lr-decay-tokens")
_SAMPLER_STATE = "a key of DeepSpeed's data sampler checkpoint, not of the config"
_LTD_STATE = "DeepSpeed's random-LTD run-time state, not a config key"


def _k(constant, path, status, note, **kw) -> DeepSpeedKey:
    return DeepSpeedKey(constant, path, status, note, **kw)


KEYS: tuple[DeepSpeedKey, ...] = (
    _k("DATA_EFFICIENCY", DE, SECTION, "the section (alone, or inside a whole DeepSpeed config)"),
    _k("DATA_EFFICIENCY_ENABLED", DE + ".enabled", ACTS,
       "turns data efficiency on; false beside an enabled curriculum or random_ltd is refused "
       "as contradictory", deepspeed_default=False),
    _k("DATA_EFFICIENCY_SEED", DE + ".seed", ACTS,
       "seeds the curriculum sampler and the random-LTD draws", deepspeed_default=1234),
    _k("DATA_SAMPLING", SAMPLING, SECTION, "data sampling"),
    _k("DATA_SAMPLING_ENABLED", SAMPLING + ".enabled", ACTS,
       "with curriculum_learning.enabled turns curriculum sampling on (one without the "
       "other is refused)", deepspeed_default=False),
    _k("DATA_SAMPLING_NUM_EPOCHS", SAMPLING + ".num_epochs", ACTS,
       "a number > 0: a run that would draw more training samples than DeepSpeed's sampler "
       "yields from num_epochs passes over the training set is refused before its first "
       "step, naming both counts (with or without a curriculum)",
       deepspeed_default=1000,
       default_here="absent: no bound (DeepSpeed's 1000 passes bind only a run that its "
                    "sampler would end mid-run)"),
    _k("DATA_SAMPLING_NUM_WORKERS", SAMPLING + ".num_workers", ACTS,
       "sets --num-workers when that flag was not given, else must equal it (the training "
       "loader's worker processes)",
       deepspeed_default=0,
       default_here="absent: --num-workers decides (the workers never change the batches)"),
    _k("DATA_SAMPLING_PIN_MEMORY", SAMPLING + ".pin_memory", ACTS,
       "the training DataLoader's pin_memory; true is refused without CUDA (pinned host "
       "memory only speeds copies to a GPU)", deepspeed_default=False,
       default_here="absent: pinned when CUDA is present (DeepSpeed's curriculum loader "
                    "always pins; DeepSpeed reads this key only for dynamic_batching)"),
    _k("CURRICULUM_LEARNING", CL, SECTION, "curriculum learning"),
    _k("CURRICULUM_LEARNING_ENABLED", CL + ".enabled", ACTS, "turns the curriculum on",
       deepspeed_default=False),
    _k("CURRICULUM_LEARNING_CLUSTER_PATH", CL + ".data_cluster_path", NO_OP,
       "no cluster file is written here: clusters are computed from the index and the seed"),
    _k("CURRICULUM_LEARNING_METRICS", CL + ".curriculum_metrics", SECTION,
       "one object per metric, keyed by the metric's name"),
    _k("CURRICULUM_LEARNING_SAMPLE_PATH", METRIC + ".index_to_sample_path", ACTS,
       "a DeepSpeed DataAnalyzer index (read directly, its sample count checked) or a file "
       "of this project's analyzer folder"),
    _k("CURRICULUM_LEARNING_METRIC_PATH", METRIC + ".index_to_metric_path", ACTS,
       "as index_to_sample_path (both must name the same index)"),
    _k("CURRICULUM_LEARNING_CLUSTERING_TYPE", METRIC + ".clustering_type", ACTS,
       "schedule_based filters the samples by the metric; single_cluster does not"),
    _k("CURRICULUM_LEARNING_SINGLE_CLUSTER", METRIC + ".clustering_type", VALUE,
       "clustering_type value"),
    _k("CURRICULUM_LEARNING_CLUSTER_PREFIX", "", NOT_A_KEY,
       "the name prefix of DeepSpeed's cluster files (none are written here)"),
    _k("CURRICULUM_LEARNING_DIFFICULTY_TYPE", METRIC + ".difficulty_type", ACTS,
       "value or percentile (and this project's percentile_window)"),
    _k("CURRICULUM_LEARNING_VALUE_BASED", METRIC + ".difficulty_type", VALUE,
       "difficulty_type value"),
    _k("CURRICULUM_LEARNING_PERCENTILE_BASED", METRIC + ".difficulty_type", VALUE,
       "difficulty_type value"),
    _k("CURRICULUM_LEARNING_MIN_DIFFICULTY", METRIC + ".min_difficulty", ACTS,
       "the pacing's start"),
    _k("CURRICULUM_LEARNING_MAX_DIFFICULTY", METRIC + ".max_difficulty", ACTS,
       "the pacing's end"),
    _k("CURRICULUM_LEARNING_SCHEDULE_TYPE", METRIC + ".schedule_type", ACTS,
       "the pacing function"),
    _k("CURRICULUM_LEARNING_SCHEDULE_CONFIG", SCHEDULE, SECTION, "the pacing's settings"),
    _k("CURRICULUM_LEARNING_SCHEDULE_DIFFICULTY", SCHEDULE + ".difficulty", ACTS,
       "fixed_discrete levels"),
    _k("CURRICULUM_LEARNING_SCHEDULE_MAX_STEP", SCHEDULE + ".max_step", ACTS,
       "fixed_discrete level ends"),
    _k("CURRICULUM_LEARNING_SCHEDULE_TOTAL_STEP", SCHEDULE + ".total_curriculum_step", ACTS,
       "fixed_linear / fixed_root length"),
    _k("CURRICULUM_LEARNING_SCHEDULE_DIFFICULTY_STEP", SCHEDULE + ".difficulty_step", ACTS,
       "rounding of the difficulty"),
    _k("CURRICULUM_LEARNING_SCHEDULE_ROOT_DEGREE", SCHEDULE + ".root_degree", ACTS,
       "fixed_root degree"),
    _k("CURRICULUM_LEARNING_SCHEDULE_FIXED_DISCRETE", METRIC + ".schedule_type", VALUE,
       "schedule_type value"),
    _k("CURRICULUM_LEARNING_SCHEDULE_FIXED_ROOT", METRIC + ".schedule_type", VALUE,
       "schedule_type value"),
    _k("CURRICULUM_LEARNING_SCHEDULE_FIXED_LINEAR", METRIC + ".schedule_type", VALUE,
       "schedule_type value"),
    _k("CURRICULUM_LEARNING_SCHEDULE_CUSTOM", METRIC + ".schedule_type", VALUE,
       "schedule_type value (the function: schedule_config.custom_function, this "
       "project's addition for DeepSpeed's set_custom_curriculum_learning_schedule)"),
    _k("CURRICULUM_LEARNING_CURRENT_DIFFICULTY", METRIC + ".current_difficulty", NOT_A_KEY,
       "DeepSpeed's curriculum scheduler state; the schedule here is a pure function of "
       "the step"),
    _k("CURRICULUM_LEARNING_BATCH", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("CURRICULUM_LEARNING_CONSUMED_SAMPLES", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("CURRICULUM_LEARNING_STEP", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("CURRICULUM_LEARNING_CURRENT_DIFFICULTIES", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("CURRICULUM_LEARNING_DATA_CLUSTER_PATHS", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("CURRICULUM_LEARNING_DATA_CLUSTER_CURRENT_POSITION", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("CURRICULUM_LEARNING_NP_RNG_STATE", "", NOT_A_KEY, _SAMPLER_STATE),
    _k("DYNAMIC_BATCHING", BATCHING, SECTION,
       "token-budget batches (BERT; composed with a curriculum, dynamic_batching/stream.py; "
       "refused for GPT, pipeline parallelism and random-LTD: see dynamic_batching/plan.py)"),
    _k("DYNAMIC_BATCHING_ENABLED", BATCHING + ".enabled", ACTS,
       "packs each step's batch to max_tokens per packing unit from the seqlen metric; "
       "true beside data_efficiency.enabled false is refused as contradictory",
       deepspeed_default=False),
    _k("DYNAMIC_BATCHING_METRICS_PATH", BATCHING + ".metrics_path", ACTS,
       "the analyzer's output folder: this project's seqlen index (checked against the "
       "training samples) or DeepSpeed's seqlen/seqlen_sample_to_metric files (sample count "
       "checked); required when enabled (DeepSpeed runs its analyzer when they are missing, "
       "here the error names the analyzer command)"),
    _k("DYNAMIC_BATCHING_LR_SCALING_METHOD", BATCHING + ".lr_scaling_method", ACTS,
       "linear, sqrt or none: each step's LR scaled from the global batch size to the "
       "step's samples", deepspeed_default="linear"),
    _k("DYNAMIC_BATCHING_MIN_BATCH_SIZE", BATCHING + ".min_batch_size", ACTS,
       "fewest samples of a packing unit", deepspeed_default=1),
    _k("DYNAMIC_BATCHING_MAX_BATCH_SIZE", BATCHING + ".max_batch_size", ACTS,
       "most samples of a packing unit (absent or 0: no bound)", deepspeed_default=None),
    _k("DYNAMIC_BATCHING_SEQUENCE_PICKING_ORDER", BATCHING + ".sequence_picking_order",
       ACTS, "dataloader, seqlen or random (seeded by data_efficiency.seed); beside a "
       "curriculum only dataloader (the curriculum's draws order the samples)",
       deepspeed_default="dataloader"),
    _k("DYNAMIC_BATCHING_MAX_TOKENS", BATCHING + ".max_tokens", ACTS,
       "most summed seqlen of a packing unit; required when enabled"),
    _k("DYNAMIC_BATCHING_VERBOSE", BATCHING + ".verbose", ACTS,
       "prints every step's batch (samples, tokens, units) once packed, on rank 0 "
       "(absent: false, as DeepSpeed reads it)"),
    _k("DATA_ROUTING", ROUTING, SECTION, "data routing"),
    _k("DATA_ROUTING_ENABLED", ROUTING + ".enabled", NO_OP,
       "DeepSpeed's engine never reads it either: random_ltd.enabled alone turns random-LTD "
       "on", deepspeed_default=False),
    _k("RANDOM_LTD", LTD, SECTION, "random layerwise token dropping"),
    _k("RANDOM_LTD_ENABLED", LTD + ".enabled", ACTS, "turns random-LTD on",
       deepspeed_default=False),
    _k("RANDOM_LTD_MODEL_MASK_NAME", LTD + ".model_mask_name", NO_OP,
       "names the mask argument of a wrapped model's forward for DeepSpeed's layer wrapper; "
       "the layers here are given the mask"),
    _k("RANDOM_LTD_MODEL_TYPE", LTD + ".model_type", ACTS,
       "decoder or encoder, checked against the model trained (GPT / BERT)"),
    _k("RANDOM_LTD_MICRO_BATCH_SIZE", LTD + ".micro_batch_size", NOT_A_KEY,
       "DeepSpeed's engine writes it from train_micro_batch_size_per_gpu; the size here is "
       "--micro-batch-size"),
    _k("RANDOM_LTD_GLOBAL_BATCH_SIZE", LTD + ".global_batch_size", NOT_A_KEY,
       "DeepSpeed's engine writes it from train_batch_size; the size here is "
       "--global-batch-size"),
    _k("RANDOM_LTD_SAMPLE_INDEX", LTD + ".sample_idx", NOT_A_KEY, _LTD_STATE),
    _k("RANDOM_LTD_ATTENTION_MASK", LTD + ".attention_mask", NOT_A_KEY, _LTD_STATE),
    _k("RANDOM_LTD_HIDDEN_STATE_ORDER", LTD + ".hidden_state_order", ACTS,
       "the order of the hidden states, which here are [s, b, h]",
       allowed=("seq_batch_dim",)),
    _k("RANDOM_LTD_LAYER_NUM", LTD + ".random_ltd_layer_num", ACTS, "how many layers drop"),
    _k("RANDOM_LTD_LAYER_ID", LTD + ".random_ltd_layer_id", ACTS, "which layers drop"),
    _k("RANDOM_LTD_TOTAL_LAYER_NUM", LTD + ".total_layer_num", ACTS,
       "must equal --num-layers"),
    _k("RANDOM_LTD_CONSUMED_LAYER_TOKENS", LTD + ".consumed_layer_tokens", NOT_A_KEY,
       _LTD_STATE),
    _k("RANDOM_LTD_SCHEDULER", LTD_SCHEDULE, SECTION, "the kept-length schedule"),
    _k("RANDOM_LTD_MAX_VALUE", LTD_SCHEDULE + ".max_value", ACTS, "the kept length's end"),
    _k("RANDOM_LTD_MIN_VALUE", LTD_SCHEDULE + ".min_value", ACTS, "the kept length at step 0"),
    _k("RANDOM_LTD_CURRENT_VALUE", LTD_SCHEDULE + ".current_value", NOT_A_KEY, _LTD_STATE),
    _k("RANDOM_LTD_SCHEDULE_CONFIG", LTD_SCHEDULE_CONFIG, SECTION, "the schedule's settings"),
    _k("RANDOM_LTD_INCREASE_STEP", LTD_SCHEDULE_CONFIG + ".seq_per_step", ACTS,
       "rounding of the kept length"),
    _k("RANDOM_LTD_REQUIRE_STEP", LTD_SCHEDULE_CONFIG + ".require_steps", ACTS,
       "steps to the full length"),
    _k("RANDOM_LTD_SCHEDULER_TYPE", LTD_SCHEDULE + ".schedule_type", ACTS,
       "the kept length's schedule (DeepSpeed has fixed_linear only)",
       allowed=("fixed_linear",)),
    _k("RANDOM_LTD_CURR_STEP", LTD_SCHEDULE + ".current_steps", NOT_A_KEY, _LTD_STATE),
    _k("RANDOM_LTD_LAYER_TOKEN_LR_SCHEDULE", LTD_LR, SECTION,
       "the layer-token LR schedule: only enabled false is accepted"),
    _k("RANDOM_LTD_LAYER_TOKEN_LR_ENABLED", LTD_LR + ".enabled", REFUSED, _LAYER_TOKEN_LR,
       allowed=(False,), deepspeed_default=False),
    _k("RANDOM_LTD_TOTAL_LAYER_TOKENS", LTD_LR + ".total_layer_tokens", REFUSED,
       _LAYER_TOKEN_LR),
    _k("RANDOM_LTD_WARMUP_TYPE", LTD_LR + ".warmup_type", REFUSED, _LAYER_TOKEN_LR),
    _k("RANDOM_LTD_WARMUP_LAYER_TOKENS", LTD_LR + ".warmup_layer_tokens", REFUSED,
       _LAYER_TOKEN_LR),
    # This project's additions.
    _k(None, METRIC + ".index_path", ACTS, "this project's analyzer folder DIR/<metric>"),
    _k(None, SCHEDULE + ".custom_function", ACTS,
       "module:function of schedule_type custom (DeepSpeed sets it through its engine's "
       "set_custom_curriculum_learning_schedule)"),
)

BY_CONSTANT = {k.constant: k for k in KEYS if k.constant is not None}
_IN_SECTION = {k.path: k for k in KEYS if k.status in (ACTS, REFUSED, NO_OP, SECTION)
               or (k.status == NOT_A_KEY and k.path)}


def _allowed(entry: DeepSpeedKey, value: Any) -> bool:
    return any(type(value) is type(a) and value == a for a in entry.allowed)


def known_keys(section: str) -> list[str]:
    """The keys accepted in ``section`` (a path of this table), sorted."""
    return sorted(k.key for k in _IN_SECTION.values()
                  if k.section == section and k.status in (ACTS, NO_OP, SECTION))


def check_section(d: Any, section: str, where: str) -> dict:
    """Return ``d`` if it is a JSON object of keys the table accepts in ``section``.

    Raises:
        ValueError: ``where.key: ...`` for the first (sorted) key that is unknown, not a
            config key, or refused (with the table's reason).
    """
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
    for key in sorted(d):
        entry = _IN_SECTION.get(f"{section}.{key}")
        if entry is None:
            raise ValueError(f"{where}.{key}: unknown key (known: "
                             f"{', '.join(known_keys(section))})")
        if entry.status == NOT_A_KEY:
            raise ValueError(f"{where}.{key}: not a configuration key ({entry.note})")
        if entry.status == REFUSED and not _allowed(entry, d[key]):
            raise ValueError(f"{where}.{key}={d[key]!r}: {entry.note}")
        if entry.status == ACTS and entry.allowed and not _allowed(entry, d[key]):
            raise ValueError(f"{where}.{key}={d[key]!r}: only "
                             f"{' or '.join(map(repr, entry.allowed))} is supported "
                             f"({entry.note})")
    return d
