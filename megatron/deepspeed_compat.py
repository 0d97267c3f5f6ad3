"""Megatron-DeepSpeed's flags and the top level of its DeepSpeed config, translated once.

Megatron-DeepSpeed's recipes pass flags that only make sense with the DeepSpeed engine
(``--deepspeed --deepspeed_config FILE --zero-stage N --checkpoint-activations ...``) and a
DeepSpeed JSON whose top-level keys (batch, clipping, fp16, ZeRO) restate the flags. Here
``add_deepspeed_args`` registers those flags and ``apply_deepspeed_flags`` (called by
``validate_args``, before anything is derived) maps each onto this codebase's own flag:

* ``--zero-stage 0|1|2|3`` (or ``zero_optimization.stage``): 1 = ``--use-distributed-optimizer``;
  2 and 3 = ``--use-torch-fsdp2`` (FSDP2; stage 2 without resharding after forward), see
  ``megatron.fsdp_flags``.
* ``--checkpoint-activations`` (``--deepspeed-activation-checkpointing`` alongside): full
  recompute, uniform, one layer per chunk.
* ``--no-pipeline-parallel``, ``--data-impl mmap|infer``: accepted; a pipeline size > 1 with
  the first is refused.
* JSON ``train_batch_size`` / ``train_micro_batch_size_per_gpu`` / ``gradient_clipping`` /
  ``steps_per_print`` / ``fp16.enabled`` / ``bf16.enabled`` / ``zero_optimization.stage``
  restate flags: explicit beats default (``megatron.given_flags``). A value fills the flag
  when the user did not give it (the start-up log says so); a flag the user gave must
  equal it, else an error names both. The fp16 loss-scale settings fill
  ``--initial-loss-scale`` etc. the same way (DeepSpeed's ``initial_scale_power`` 11 is a
  scale of 2**11); ``gradient_accumulation_steps`` must match the derived layout.
* ``prescale_gradients``: the gradients are averaged over data-parallel ranks whichever way
  round (an fp32 all-reduce of ``g / dp`` and ``(sum g) / dp`` differ only in rounding), so
  both values are accepted. ``wall_clock_breakdown: false`` and
  ``dataloader_drop_last: true`` are this codebase's behaviour; their opposites are refused.
* ``--trust-remote-code`` (also Megatron-LM's) is refused: no tokenizer code is run here.
* Any other top-level key is refused by name. The ``data_efficiency`` section is read by
  ``megatron.data_efficiency.config`` exactly as ``--data-efficiency-config`` reads it.
"""
from __future__ import annotations

import argparse

from megatron.run_config import DataConfig
from megatron.data_efficiency.config import read_json_object
from megatron.data_efficiency.json_keys import check_keys
from megatron.errors import BadConfigError
from megatron.fsdp_flags import apply_zero_stage
from megatron.given_flags import note_from_config, was_given
from megatron.tokenizer.hf_tokenization import REMOTE_CODE_REFUSED

# Megatron's defaults of the loss-scale flags (None in the parser so that a value given in
# the DeepSpeed JSON can fill a flag that was not given).
LOSS_SCALE_DEFAULTS = {"initial_loss_scale": 2.0 ** 32, "min_loss_scale": 1.0,
                       "loss_scale_window": 1000, "hysteresis": 2}
_TOP_KEYS = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
             "steps_per_print", "zero_optimization", "gradient_clipping", "prescale_gradients",
             "fp16", "bf16", "wall_clock_breakdown", "dataloader_drop_last", "data_efficiency",
             "curriculum_learning"}
_FP16_KEYS = {"enabled", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis",
              "min_loss_scale"}


def add_deepspeed_args(parser: argparse.ArgumentParser) -> None:
    """Megatron-DeepSpeed's flags (see the module docstring for what each maps to)."""
    g = parser.add_argument_group("Megatron-DeepSpeed compatibility")
    g.add_argument("--deepspeed", action="store_true",
                   help="Megatron-DeepSpeed's engine switch; needs --deepspeed_config")
    g.add_argument("--deepspeed_config", "--deepspeed-config", dest="deepspeed_config",
                   default=None, metavar="FILE",
                   help="DeepSpeed JSON: its data_efficiency section is read as "
                        "--data-efficiency-config, its batch/clipping/fp16/ZeRO keys are "
                        "checked against the flags")
    g.add_argument("--zero-stage", type=int, default=None,
                   help="0: plain data parallel; 1: --use-distributed-optimizer; 2 / 3: "
                        "--use-torch-fsdp2 (2: gathered weights kept from forward to "
                        "backward; 3: resharded after forward)")
    g.add_argument("--checkpoint-activations", action="store_true",
                   help="= --recompute-granularity full --recompute-method uniform")
    g.add_argument("--deepspeed-activation-checkpointing", action="store_true",
                   help="with --checkpoint-activations (DeepSpeed's implementation there)")
    g.add_argument("--no-pipeline-parallel", action="store_true",
                   help="non-pipeline model (needs --pipeline-model-parallel-size 1)")
    g.add_argument("--data-impl", default="mmap", choices=["mmap", "infer"],
                   help="indexed-dataset implementation: the store is always mmap")
    g.add_argument("--override-opt_param-scheduler", "--override-opt-param-scheduler",
                   dest="override_opt_param_scheduler", action="store_true",
                   help="on load, take the LR schedule from the flags (only its step / "
                        "sample / token counters from the checkpoint)")
    g.add_argument("--log-batch-size-to-tensorboard", action="store_true")
    g.add_argument("--log-validation-ppl-to-tensorboard", action="store_true")
    g.add_argument("--log-optimizer-states-to-tensorboard", action="store_true")
    g.add_argument("--train-doc-idx-path", default=None, help="GPT train split: doc_idx .npy")
    g.add_argument("--train-sample-idx-path", default=None,
                   help="GPT train split: sample_idx .npy")
    g.add_argument("--train-shuffle-idx-path", default=None,
                   help="GPT train split: shuffle_idx .npy")
    g.add_argument("--train-idx-path", default=None, help="BERT train split: samples mapping .npy")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="refused: a Hugging Face tokenizer's own code is never run here")


_GPT_MAP_FLAGS = {"train_doc_idx_path": "--train-doc-idx-path",
                  "train_sample_idx_path": "--train-sample-idx-path",
                  "train_shuffle_idx_path": "--train-shuffle-idx-path"}


def gpt_train_index_maps(data: DataConfig) -> dict[str, str] | None:
    """``{flag: path}`` of the GPT train split's doc / sample / shuffle maps to load, or None.

    Raises:
        BadConfigError: ``--train-idx-path`` (BERT's) was given to GPT.
    """
    if data.train_idx_path:
        raise BadConfigError("--train-idx-path is the BERT samples mapping; GPT takes "
                             "--train-doc-idx-path / --train-sample-idx-path / "
                             "--train-shuffle-idx-path")
    if data.train_doc_idx_path is None:
        return None
    return {flag: getattr(data, name) for name, flag in _GPT_MAP_FLAGS.items()}


def bert_train_mapping(data: DataConfig) -> dict[str, str] | None:
    """``{"--train-idx-path": path}`` of the BERT train samples mapping to load, or None.

    Raises:
        BadConfigError: GPT's ``--train-*-idx-path`` maps were given to BERT.
    """
    given = [flag for name, flag in _GPT_MAP_FLAGS.items() if getattr(data, name)]
    if given:
        raise BadConfigError(f"{given} are GPT's sample maps; BERT takes --train-idx-path")
    return None if data.train_idx_path is None else {"--train-idx-path": data.train_idx_path}


def default_tokenizer_type(args: argparse.Namespace) -> str | None:
    """The tokenizer when ``--tokenizer-type`` is not given (and the script names none):
    ``NullTokenizer`` under ``--vocab-size``; Megatron-DeepSpeed's default
    ``GPT2BPETokenizer`` when a ``--merge-file`` is given; else None."""
    if args.vocab_size is not None:
        return "NullTokenizer"
    return "GPT2BPETokenizer" if args.merge_file else None


def read_deepspeed_json(path: str) -> dict:
    """The DeepSpeed config file of ``--deepspeed_config``, as a dict."""
    return read_json_object(path, "--deepspeed_config")


def apply_deepspeed_flags(args: argparse.Namespace, errors: list[str]) -> dict | None:
    """Map the Megatron-DeepSpeed flags and the JSON top level onto this codebase's flags
    (in place, at the start of ``validate_args``); every problem is appended to ``errors``.
    A JSON value fills a flag the user did not give (``megatron.given_flags``) and must
    equal one the user gave. Returns the JSON (None without one) for
    ``check_deepspeed_batch``, which runs once the layout is derived."""
    ds = None
    if args.deepspeed and not args.deepspeed_config:
        errors.append("--deepspeed needs --deepspeed_config FILE")
    if args.deepspeed_config:
        if args.data_efficiency_config:
            errors.append("--deepspeed_config and --data-efficiency-config both name a "
                          "data-efficiency config; give one")
        try:
            ds = read_deepspeed_json(args.deepspeed_config)
            check_keys(ds, _TOP_KEYS, f"--deepspeed_config {args.deepspeed_config}")
        except (BadConfigError, ValueError) as err:
            errors.append(str(err))
            ds = None
    if args.trust_remote_code:
        errors.append(REMOTE_CODE_REFUSED)
    _zero_stage(args, ds, errors)
    _activation_checkpointing(args, errors)
    maps = [flag for name, flag in _GPT_MAP_FLAGS.items() if getattr(args, name)]
    if maps and len(maps) != len(_GPT_MAP_FLAGS):
        errors.append(f"{maps} given without the other of {list(_GPT_MAP_FLAGS.values())}: "
                      "the three maps are loaded together")
    if args.no_pipeline_parallel and args.pipeline_model_parallel_size > 1:
        errors.append(f"--no-pipeline-parallel contradicts --pipeline-model-parallel-size "
                      f"{args.pipeline_model_parallel_size}")
    if ds is not None:
        _check_top_level(args, ds, f"--deepspeed_config {args.deepspeed_config}", errors)
    for key, default in LOSS_SCALE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    return ds


def check_deepspeed_batch(args: argparse.Namespace, ds: dict | None,
                          errors: list[str]) -> None:
    """The JSON's ``gradient_accumulation_steps`` against the micro-batches per step the
    derived layout gives (``--global-batch-size`` / (``--micro-batch-size`` x data-parallel
    size))."""
    if ds is None or args.micro_batch_size is None or "gradient_accumulation_steps" not in ds:
        return
    where = f"--deepspeed_config {args.deepspeed_config}"
    accum = args.global_batch_size // (args.micro_batch_size * args.data_parallel_size)
    if ds["gradient_accumulation_steps"] != accum:
        errors.append(f"{where}: gradient_accumulation_steps "
                      f"{ds['gradient_accumulation_steps']} contradicts --global-batch-size "
                      f"/ (--micro-batch-size x data-parallel size) = {accum}")


def _zero_stage(args: argparse.Namespace, ds: dict | None, errors: list[str]) -> None:
    zero = (ds or {}).get("zero_optimization", {})
    if not isinstance(zero, dict) or set(zero) - {"stage"}:
        errors.append(f"--deepspeed_config: zero_optimization supports only the key 'stage' "
                      f"here, got {zero!r}")
        zero = {}
    stage = args.zero_stage
    if "stage" in zero:
        if stage is not None and stage != zero["stage"]:
            errors.append(f"--zero-stage {stage} contradicts zero_optimization.stage "
                          f"{zero['stage']} in --deepspeed_config")
        stage = zero["stage"]
    if stage is not None:
        apply_zero_stage(args, stage, errors)


def _activation_checkpointing(args: argparse.Namespace, errors: list[str]) -> None:
    if args.deepspeed_activation_checkpointing and not args.checkpoint_activations \
            and args.recompute_granularity != "full":
        errors.append("--deepspeed-activation-checkpointing does nothing without "
                      "--checkpoint-activations (or --recompute-granularity full)")
    if not args.checkpoint_activations:
        return
    if args.recompute_granularity not in (None, "full"):
        errors.append(f"--checkpoint-activations (full recompute) contradicts "
                      f"--recompute-granularity {args.recompute_granularity}")
        return
    args.recompute_granularity = "full"
    if args.recompute_method is None:
        args.recompute_method = "uniform"
    if args.recompute_num_layers is None:
        args.recompute_num_layers = 1


# JSON key -> the flag it restates; a flag not given takes the JSON's value.
_RESTATED = (("train_batch_size", "global_batch_size"),
             ("train_micro_batch_size_per_gpu", "micro_batch_size"),
             ("gradient_clipping", "clip_grad"), ("steps_per_print", "log_interval"))


def _agree(args: argparse.Namespace, dest: str, value, where: str, key: str,
           errors: list[str]) -> None:
    """The JSON's ``key`` and the flag of ``dest``: the value fills a flag that was not
    given; a given flag must equal it."""
    flag = "--" + dest.replace("_", "-")
    if not was_given(args, dest):
        if getattr(args, dest) != value:
            note_from_config(args, dest, value, f"{where} {key}")
    elif getattr(args, dest) != value:
        errors.append(f"{where}: {key} {value} contradicts {flag} {getattr(args, dest)}")


def _check_top_level(args: argparse.Namespace, ds: dict, where: str,
                     errors: list[str]) -> None:
    for key, dest in _RESTATED:
        if key in ds:
            _agree(args, dest, ds[key], where, key, errors)
    for key, ours in (("wall_clock_breakdown", False), ("dataloader_drop_last", True)):
        if key in ds and ds[key] is not ours:
            errors.append(f"{where}: {key} {ds[key]!r} is not supported (only {ours})")
    if "prescale_gradients" in ds and not isinstance(ds["prescale_gradients"], bool):
        errors.append(f"{where}: prescale_gradients must be true or false")
    for kind in ("fp16", "bf16"):
        if kind in ds and isinstance(ds[kind], dict):
            _agree(args, kind, bool(ds[kind].get("enabled", False)), where, f"{kind}.enabled",
                   errors)
    if args.fp16 and args.bf16:
        errors.append(f"{where}: fp16 and bf16 are both enabled (by the JSON or the flags)")
    if "fp16" in ds:
        _check_fp16(args, ds["fp16"], where, errors)


def _check_fp16(args: argparse.Namespace, fp16: dict, where: str, errors: list[str]) -> None:
    try:
        check_keys(fp16, _FP16_KEYS, f"{where}: fp16")
    except ValueError as err:
        errors.append(str(err))
        return
    if not bool(fp16.get("enabled", False)):
        return
    static = fp16.get("loss_scale", 0)
    if static and args.loss_scale is not None and static != args.loss_scale:
        errors.append(f"{where}: fp16.loss_scale {static} contradicts --loss-scale "
                      f"{args.loss_scale}")
    elif not static and args.loss_scale is not None:
        errors.append(f"{where}: fp16.loss_scale 0 (dynamic) contradicts --loss-scale "
                      f"{args.loss_scale}")
    elif static:
        note_from_config(args, "loss_scale", float(static), f"{where} fp16.loss_scale")
    json_values = {"min_loss_scale": fp16.get("min_loss_scale"),
                   "loss_scale_window": fp16.get("loss_scale_window"),
                   "hysteresis": fp16.get("hysteresis"),
                   "initial_loss_scale": (None if "initial_scale_power" not in fp16
                                          else 2.0 ** fp16["initial_scale_power"])}
    for key, value in json_values.items():
        if value is None:
            continue
        json_key = "initial_scale_power" if key == "initial_loss_scale" else key
        given = getattr(args, key)   # None: not given (the defaults are filled afterwards)
        if given is None:
            note_from_config(args, key, type(LOSS_SCALE_DEFAULTS[key])(value),
                             f"{where} fp16.{json_key}")
        elif given != value:
            errors.append(f"{where}: fp16.{json_key} {fp16[json_key]} contradicts "
                          f"--{key.replace('_', '-')} {given}")
