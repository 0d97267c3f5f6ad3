"""Data-efficiency configuration from a DeepSpeed-shaped JSON file (the flags are turned
into the same JSON by ``config_flags.py``).

JSON (``--data-efficiency-config FILE``): either DeepSpeed's ``data_efficiency`` section
alone or a whole DeepSpeed config holding it; a DeepSpeed config's legacy top-level
``curriculum_learning`` section (``curriculum_type: seqlen``) is read as ``seqtru``::

    {"enabled": true, "seed": 1234,
     "data_sampling": {"enabled": true, "num_workers": 0, "pin_memory": false,
       "curriculum_learning": {"enabled": true, "data_cluster_path": "ignored",
         "curriculum_metrics": {
           "vocabularyrarity": {"index_path": "DIR/voc", "difficulty_type": "percentile",
             "clustering_type": "schedule_based", "min_difficulty": 1, "max_difficulty": 100,
             "schedule_type": "fixed_root",
             "schedule_config": {"total_curriculum_step": 110000, "difficulty_step": 1,
                                 "root_degree": 2}},
           "seqlen_truncate": {"difficulty_type": "value", "clustering_type": "single_cluster",
             "min_difficulty": 80, "max_difficulty": 2048, "schedule_type": "fixed_linear",
             "schedule_config": {"total_curriculum_step": 110000, "difficulty_step": 8}}}}},
     "data_routing": {"enabled": true, "random_ltd": {...}}}

Metric names: ``seqlen_truncate``/``seqtru`` and ``seqlen_reshape``/``seqres`` are batch
transforms (value-based, in tokens; no index is read, an ``index_*`` path such as
DeepSpeed's ``"dummy"`` is ignored). Every other name is an index metric read from this
project's analyzer folder: ``index_path`` (``DIR/<metric>``), or DeepSpeed's
``index_to_sample_path``/``index_to_metric_path`` when they name files of such a folder
(``sorted_samples.npy`` / ``sample_to_metric.npy``), or a DeepSpeed ``DataAnalyzer`` index
(its ``<m>_index_to_sample[_percentile_merged]`` / ``<m>_index_to_metric`` files), read
directly and checked to count the training set's samples. ``data_sampling.pin_memory``
is the training loader's pinning (true needs CUDA); ``num_workers`` sets
``--num-workers`` when that flag was not given, else must equal it; ``num_epochs`` bounds the samples a run may draw, as DeepSpeed's
sampler does; ``dynamic_batching`` packs token-budget batches (``dynamic_batching/``).
``schedule_config.custom_function`` (``"module:function"``) is this project's addition for
``schedule_type: custom``.
``data_cluster_path`` is accepted and unused: no cluster file is ever written.
``difficulty_type: "percentile_window"`` (this project's addition, for pruning) takes
``min_difficulty`` / ``max_difficulty`` as ``[lo, hi]`` percentile pairs with the same
``lo``: the sampler admits the band from the ``lo`` to the scheduled ``hi`` percentile
(a static window when both pairs are equal; then ``schedule_type`` may be left out).
Unknown keys and contradictions are errors naming the key path; which DeepSpeed key
acts, is refused or is a documented no-op is one table, ``deepspeed_keys.py``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from megatron.data_efficiency.analyzer.deepspeed_index import DeepSpeedIndexPaths
from megatron.data_efficiency.curriculum.scheduler import SCHEDULE_TYPES, ScheduleConfig
from megatron.data_efficiency.dynamic_batching.config import (DynamicBatchingConfig,
                                                              dynamic_batching_from_dict)
from megatron.data_efficiency.index_paths import index_dir
from megatron.data_efficiency import deepspeed_keys as dsk
from megatron.data_efficiency.json_keys import check_keys
from megatron.data_efficiency.random_ltd.config import RandomLTDConfig
from megatron.errors import BadConfigError

TRANSFORM_ALIASES = {"seqlen_truncate": "seqtru", "seqtru": "seqtru",
                     "seqlen_reshape": "seqres", "seqres": "seqres"}
SEQLEN_INDEX_NAMES = ("seqlen", "seqlen_voc", "seqreo", "seqreo_voc")

_DE_KEYS = set(dsk.known_keys(dsk.DE))
_LEGACY_KEYS = {"enabled", "curriculum_type", "min_difficulty", "max_difficulty",
                "schedule_type", "schedule_config"}


@dataclass(frozen=True)
class CurriculumMetricConfig:
    """One curriculum metric.

    Attributes:
        name: as configured (TensorBoard shows ``curriculum/<name>``).
        kind: ``"seqtru"``, ``"seqres"`` (batch transforms) or ``"index"`` (sampler).
        difficulty_type: ``"value"`` or ``"percentile"``.
        clustering_type: ``"schedule_based"`` or ``"single_cluster"`` (an index metric
            with ``single_cluster`` is not used to filter, as in DeepSpeed).
        schedule: the pacing settings.
        index_path: the analyzer folder of an index metric, or the DeepSpeed
            ``DataAnalyzer`` index it reads directly (``DeepSpeedIndexPaths``).
    """
    name: str
    kind: str
    difficulty_type: str
    clustering_type: str
    schedule: ScheduleConfig
    index_path: str | DeepSpeedIndexPaths | None = None
    window_low: float | None = None     # percentile_window: the band's fixed low percentile

    @property
    def samples(self) -> bool:
        """Whether the sampler filters on this metric."""
        return self.kind == "index" and self.clustering_type == "schedule_based"


@dataclass(frozen=True)
class CurriculumConfig:
    enabled: bool = False
    metrics: list[CurriculumMetricConfig] = field(default_factory=list)

    @property
    def transform_metric(self) -> CurriculumMetricConfig | None:
        """The seqtru / seqres metric, if any (at most one)."""
        found = [m for m in self.metrics if m.kind != "index"]
        return found[0] if found else None

    @property
    def sampling_metrics(self) -> list[CurriculumMetricConfig]:
        return [m for m in self.metrics if m.samples]

    def transform_for(self, model: str) -> str | None:
        """Batch transform to apply: ``seqtru``/``seqres``; for BERT a ``seqlen``-family
        index metric without one means ``seqreo``; else None."""
        t = self.transform_metric
        if t is not None:
            return t.kind
        if model == "bert" and any(m.name in SEQLEN_INDEX_NAMES for m in self.sampling_metrics):
            return "seqreo"
        return None


@dataclass(frozen=True)
class DataEfficiencyConfig:
    """Everything data efficiency reads, built once (in ``validate_args``) from the file
    or the flags, then passed in: the curriculum (sampling metrics and batch transform),
    random-LTD, and through both the token accounting of every step.

    ``seed`` seeds the curriculum sampler and the random-LTD draws (DeepSpeed's
    ``data_efficiency.seed``; ``--seed`` when the config comes from flags).
    ``num_workers`` is ``data_sampling.num_workers`` (fills or is checked against ``--num-workers``),
    ``pin_memory`` the training loader's pinning (``loader_pin_memory``), ``num_epochs``
    the bound on the samples a run may draw (``check_num_epochs``); None: not given.
    ``dynamic_batching``: token-budget batches (``dynamic_batching.config``).
    """
    enabled: bool = False
    seed: int = 1234
    num_workers: int | None = None
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    random_ltd: RandomLTDConfig = field(default_factory=RandomLTDConfig)
    source: str = "flags"
    pin_memory: bool | None = None
    num_epochs: float | None = None
    dynamic_batching: DynamicBatchingConfig = field(default_factory=DynamicBatchingConfig)

    def loader_pin_memory(self, cuda_available: bool) -> bool:
        """The training DataLoader's ``pin_memory``: ``data_sampling.pin_memory`` when
        given, else pinned exactly when CUDA is present.

        Raises:
            BadConfigError: ``pin_memory`` true without CUDA (pinned host memory only
                speeds copies to a GPU; PyTorch would ignore it with a warning).
        """
        if self.pin_memory is None:
            return cuda_available
        if self.pin_memory and not cuda_available:
            raise BadConfigError(f"{self.source}: data_efficiency.data_sampling.pin_memory "
                                 f"true needs CUDA: pinned host memory only speeds copies to "
                                 f"a GPU, and there is none here (set it false or drop it)")
        return self.pin_memory

    def check_num_epochs(self, planned_samples: int, epoch_samples: int,
                         samples_per_microbatch: int) -> None:
        """Refuse a run that would draw more training samples than DeepSpeed's sampler
        yields with ``data_sampling.num_epochs``: it yields micro-batches of all DP ranks
        (``samples_per_microbatch`` = micro batch x DP) while its count of samples drawn
        is at most ``num_epochs x epoch_samples`` (the training set's length), i.e. one
        micro-batch past that count at most; a run asking for more ended mid-run there.

        Raises:
            BadConfigError: naming the planned samples and the bound.
        """
        if self.num_epochs is None:
            return
        bound = self.num_epochs * epoch_samples
        limit = (math.floor(bound / samples_per_microbatch) + 1) * samples_per_microbatch
        if planned_samples > limit:
            raise BadConfigError(
                f"{self.source}: data_efficiency.data_sampling.num_epochs {self.num_epochs}: "
                f"the run draws {planned_samples} training samples, but {self.num_epochs} "
                f"passes over the {epoch_samples} samples of the training set allow "
                f"{bound:g} (DeepSpeed's sampler stops at the first micro-batch of "
                f"{samples_per_microbatch} past that: {limit}); raise num_epochs or "
                f"shorten the run")


# -- JSON ------------------------------------------------------------------------------
def _number(d: dict, key: str, where: str) -> float:
    if key not in d:
        raise ValueError(f"{where}.{key}: required")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}.{key}: expected a number, got {v!r}")
    return v


_SCHEDULE_READS = {"fixed_linear": {"total_curriculum_step", "difficulty_step", "root_degree"},
                   "fixed_root": {"total_curriculum_step", "difficulty_step", "root_degree"},
                   "fixed_discrete": {"difficulty", "max_step"}, "custom": {"custom_function"}}


def _schedule(m: dict, where: str, d_min: float, d_max: float) -> ScheduleConfig:
    stype = m.get("schedule_type")
    if stype not in SCHEDULE_TYPES:
        raise ValueError(f"{where}.schedule_type={stype!r}: expected one of {SCHEDULE_TYPES}")
    sc = dsk.check_section(m.get("schedule_config", {}), dsk.SCHEDULE, f"{where}.schedule_config")
    sw = f"{where}.schedule_config"
    kw: dict = {}
    if stype in ("fixed_linear", "fixed_root"):
        kw["total_curriculum_step"] = int(_number(sc, "total_curriculum_step", sw))
        kw["difficulty_step"] = int(_number(sc, "difficulty_step", sw))
        if stype == "fixed_root":
            kw["root_degree"] = _number(sc, "root_degree", sw)
        elif sc.get("root_degree", 1) != 1:
            raise ValueError(f"{sw}.root_degree={sc['root_degree']}: contradicts "
                             f"schedule_type fixed_linear (root 1); use fixed_root")
    elif stype == "fixed_discrete":
        kw["difficulty"] = list(sc.get("difficulty", []))
        kw["max_step"] = [int(x) for x in sc.get("max_step", [])]
    else:
        kw["custom_function"] = sc.get("custom_function")
    unread = sorted(set(sc) - _SCHEDULE_READS[stype])
    if unread:   # DeepSpeed ignores them; a setting that does nothing is a mistake here
        raise ValueError(f"{sw}.{unread[0]}: contradicts schedule_type {stype}, which does "
                         f"not read it")
    cfg = ScheduleConfig(stype, d_min, d_max, **kw)
    cfg.validate(where)
    return cfg


def _window(m: dict, where: str) -> tuple[dict, float]:
    """``percentile_window``: ``[lo, hi]`` pairs -> (the metric with plain ``hi``
    difficulties, ``lo``). A static window needs no schedule (one discrete level)."""
    pairs = []
    for key in ("min_difficulty", "max_difficulty"):
        v = m.get(key)
        if (not isinstance(v, (list, tuple)) or len(v) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v)):
            raise ValueError(f"{where}.{key}={v!r}: difficulty_type percentile_window takes "
                             f"a [lo, hi] pair of percentiles")
        pairs.append(v)
    (lo, hi0), (lo1, hi1) = pairs
    if lo != lo1:
        raise ValueError(f"{where}: percentile_window low edges differ ({lo} and {lo1}); the "
                         f"low edge is fixed (admitted samples stay admitted)")
    if not 0 <= lo < hi0 <= hi1 <= 100:
        raise ValueError(f"{where}: percentile_window needs 0 <= lo < hi <= 100, got "
                         f"[{lo}, {hi0}] .. [{lo}, {hi1}]")
    out = dict(m, min_difficulty=hi0, max_difficulty=hi1)
    if hi0 == hi1 and "schedule_type" not in m:
        out.update(schedule_type="fixed_discrete", schedule_config={"difficulty": [hi1]})
    return out, lo


def _metric(name: str, m: dict, where: str) -> CurriculumMetricConfig:
    dsk.check_section(m, dsk.METRIC, where)
    kind = TRANSFORM_ALIASES.get(name, "index")
    default_type = "value" if kind != "index" else "percentile"
    dtype = m.get("difficulty_type", default_type)
    if dtype not in ("value", "percentile", "percentile_window"):
        raise ValueError(f"{where}.difficulty_type={dtype!r}: expected value, percentile or "
                         f"percentile_window")
    window_low = None
    if dtype == "percentile_window":
        if kind != "index":
            raise ValueError(f"{where}.difficulty_type=percentile_window contradicts "
                             f"{name}, whose difficulty is a length in tokens (value)")
        m, window_low = _window(m, where)
    if kind != "index" and dtype != "value":
        raise ValueError(f"{where}.difficulty_type=percentile contradicts {name}, whose "
                         f"difficulty is a length in tokens (value)")
    ctype = m.get("clustering_type", "single_cluster" if kind != "index" else "schedule_based")
    if ctype not in ("schedule_based", "single_cluster"):
        raise ValueError(f"{where}.clustering_type={ctype!r}: expected schedule_based or "
                         f"single_cluster")
    d_min, d_max = _number(m, "min_difficulty", where), _number(m, "max_difficulty", where)
    if dtype == "percentile" and not 0 <= d_min <= d_max <= 100:
        raise ValueError(f"{where}: percentile difficulties must satisfy 0 <= min_difficulty "
                         f"<= max_difficulty <= 100, got {d_min}, {d_max}")
    index = index_dir(m, where) if kind == "index" else None
    if kind == "index" and index is None:
        raise ValueError(f"{where}: index metric {name!r} needs index_path (this project's "
                         f"analyzer folder DIR/<metric>)")
    return CurriculumMetricConfig(name, kind, dtype, ctype,
                                  _schedule(m, where, d_min, d_max), index, window_low)


def _curriculum(cl: dict, where: str) -> CurriculumConfig:
    dsk.check_section(cl, dsk.CL, where)
    if not cl.get("enabled", False):
        return CurriculumConfig(False)
    metrics = cl.get("curriculum_metrics", {})
    if not isinstance(metrics, dict):
        raise ValueError(f"{where}.curriculum_metrics must be a JSON object")
    if not metrics:
        raise ValueError(f"{where}.curriculum_metrics: enabled but no metric given")
    out = [_metric(n, m, f"{where}.curriculum_metrics.{n}") for n, m in metrics.items()]
    transforms = [m.name for m in out if m.kind != "index"]
    if len(transforms) > 1:
        raise ValueError(f"{where}.curriculum_metrics: {transforms} are contradictory "
                         f"(one sequence-length transform at most)")
    return CurriculumConfig(True, out)


def _legacy(cl: dict, where: str) -> CurriculumConfig:
    check_keys(cl, _LEGACY_KEYS, where)
    if not cl.get("enabled", False):
        return CurriculumConfig(False)
    if cl.get("curriculum_type", "seqlen") != "seqlen":
        raise ValueError(f"{where}.curriculum_type={cl['curriculum_type']!r}: only seqlen")
    m = {k: v for k, v in cl.items() if k not in ("enabled", "curriculum_type")}
    return CurriculumConfig(True, [_metric("seqtru", m, where)])


def _read_sampling(sampling: dict, where: str) -> dict:
    """``data_sampling``'s own keys (not the curriculum) as ``DataEfficiencyConfig``
    fields: num_workers, pin_memory, num_epochs, dynamic_batching."""
    dsk.check_section(sampling, dsk.SAMPLING, where)
    fields: dict = {}
    if "dynamic_batching" in sampling:
        batching = dsk.check_section(sampling["dynamic_batching"], dsk.BATCHING,
                                     f"{where}.dynamic_batching")
        fields["dynamic_batching"] = dynamic_batching_from_dict(batching,
                                                                f"{where}.dynamic_batching")
    pin = sampling.get("pin_memory")
    if pin is not None and not isinstance(pin, bool):
        raise ValueError(f"{where}.pin_memory={pin!r}: expected true or false")
    epochs = sampling.get("num_epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                               or not 0 < epochs < float("inf")):
        raise ValueError(f"{where}.num_epochs={epochs!r}: expected a number > 0 (passes over "
                         f"the training set)")
    workers = sampling.get("num_workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 0):
        raise ValueError(f"{where}.num_workers={workers!r}: expected an integer >= 0")
    return {**fields, "num_workers": workers, "pin_memory": pin, "num_epochs": epochs}


def config_from_dict(d: dict, source: str = "<dict>",
                     seq_length: int | None = None) -> DataEfficiencyConfig:
    """Parse a ``data_efficiency`` section or a whole DeepSpeed config (see module doc)."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: top level must be a JSON object")
    whole = "data_efficiency" in d or "curriculum_learning" in d
    if not whole and not ({"data_sampling", "data_routing"} & set(d) or set(d) <= _DE_KEYS):
        raise ValueError(f"{source}: neither a data_efficiency section nor a DeepSpeed config "
                         f"holding one (keys: {sorted(d)})")
    de = d.get("data_efficiency", {}) if whole else d
    where = f"{source}: data_efficiency"
    dsk.check_section(de, dsk.DE, where)
    enabled = bool(de.get("enabled", False))
    sampling = de.get("data_sampling", {})
    fields = _read_sampling(sampling, f"{where}.data_sampling")
    curriculum = CurriculumConfig()
    if sampling.get("enabled", False) or "curriculum_learning" in sampling:
        curriculum = _curriculum(sampling.get("curriculum_learning", {}),
                                 f"{where}.data_sampling.curriculum_learning")
        if curriculum.enabled and not sampling.get("enabled", False):
            raise ValueError(f"{where}.data_sampling.enabled is false but its "
                             f"curriculum_learning is enabled: contradictory")
    if whole and "curriculum_learning" in d:
        legacy = _legacy(d["curriculum_learning"], f"{source}: curriculum_learning")
        if legacy.enabled and curriculum.enabled:
            raise ValueError(f"{source}: both the legacy curriculum_learning section and "
                             f"data_efficiency curriculum learning are enabled")
        if legacy.enabled:
            curriculum, enabled = legacy, True
    batching = fields.get("dynamic_batching")
    for what, on in (("curriculum learning", curriculum.enabled),
                     ("data_sampling.dynamic_batching", batching is not None and batching.enabled)):
        if on and not enabled:
            raise ValueError(f"{where}.enabled is false but {what} is enabled: contradictory")
    if "data_routing" in de:
        fields["random_ltd"] = RandomLTDConfig.from_deepspeed_dict(
            {"data_routing": de["data_routing"]}, seq_length)
        if fields["random_ltd"].enabled and not enabled:
            raise ValueError(f"{where}.enabled is false but data_routing.random_ltd is "
                             f"enabled: contradictory")
    return DataEfficiencyConfig(enabled=enabled, seed=int(de.get("seed", 1234)), source=source,
                                curriculum=curriculum, **fields)


def read_json_object(path: str, flag: str) -> dict:
    """The JSON object in the file a config flag names; a missing, unreadable or malformed
    file is a ``BadConfigError`` naming the flag and the file."""
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as err:
        raise BadConfigError(f"{flag} {path}: cannot read: {err}") from err
    except json.JSONDecodeError as err:
        raise BadConfigError(f"{flag} {path}: not valid JSON: {err}") from err
    if not isinstance(d, dict):
        raise BadConfigError(f"{flag} {path}: top level must be a JSON object")
    return d


def load_config_file(path: str, seq_length: int | None = None,
                     flag: str = "--data-efficiency-config") -> DataEfficiencyConfig:
    """Read ``--data-efficiency-config FILE`` (or ``--deepspeed_config FILE``: ``flag``;
    a DeepSpeed config without data-efficiency sections, as Megatron-DeepSpeed's baseline
    and finetuning recipes pass, turns data efficiency off)."""
    d = read_json_object(path, flag)
    if flag == "--deepspeed_config" and not set(d) & {"data_efficiency", "curriculum_learning",
                                                       "data_sampling", "data_routing"}:
        return DataEfficiencyConfig(source=path)
    try:
        return config_from_dict(d, source=path, seq_length=seq_length)
    except ValueError as err:   # a bad key or value: name the file, one line
        raise BadConfigError(str(err)) from err
