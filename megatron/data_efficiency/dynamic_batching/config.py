"""``data_efficiency.data_sampling.dynamic_batching``: DeepSpeed 0.19.8's keys, read and
checked (``deepspeed/runtime/data_pipeline/config.py``, ``get_dynamic_batching``)."""
from __future__ import annotations

from dataclasses import dataclass

from megatron.data_efficiency.dynamic_batching.packing import (LR_SCALING_METHODS,
                                                               PICKING_ORDERS)


@dataclass(frozen=True)
class DynamicBatchingConfig:
    """Token-budget batches (DeepSpeed's defaults where a key is absent).

    Attributes:
        enabled: batches are packed to ``max_tokens`` per packing unit.
        max_tokens: most summed ``seqlen`` of one unit (required when enabled).
        min_batch_size, max_batch_size: bounds on a unit's samples (0 / None: none).
        sequence_picking_order: ``dataloader``, ``seqlen`` or ``random``.
        lr_scaling_method: ``linear``, ``sqrt`` or ``none``.
        metrics_path: the analyzer's output folder holding the ``seqlen`` metric (this
            project's ``DIR/seqlen`` index, or DeepSpeed's
            ``seqlen/seqlen_sample_to_metric`` files).
        verbose: print every step's batch when packed (rank 0).
    """
    enabled: bool = False
    max_tokens: int | None = None
    min_batch_size: int = 1
    max_batch_size: int | None = None
    sequence_picking_order: str = "dataloader"
    lr_scaling_method: str = "linear"
    metrics_path: str | None = None
    verbose: bool = False


def _int(d: dict, key: str, where: str, low: int, default):
    v = d.get(key, default)
    if v is None and default is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{where}.{key}={v!r}: expected an integer >= {low}")
    return v


def dynamic_batching_from_dict(d: dict, where: str) -> DynamicBatchingConfig:
    """The section's values (its keys already checked against ``deepspeed_keys``).

    Raises:
        ValueError: naming the key: a value of the wrong type or out of range, or
            ``enabled`` without ``max_tokens`` / ``metrics_path``.
    """
    enabled = d.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ValueError(f"{where}.enabled={enabled!r}: expected true or false")
    order = d.get("sequence_picking_order", "dataloader")
    if order not in PICKING_ORDERS:
        raise ValueError(f"{where}.sequence_picking_order={order!r}: expected one of "
                         f"{', '.join(PICKING_ORDERS)}")
    method = d.get("lr_scaling_method", "linear")
    if isinstance(method, str) and method.upper() == "NONE":   # DeepSpeed: any case of none
        method = "none"
    if method not in LR_SCALING_METHODS:
        raise ValueError(f"{where}.lr_scaling_method={method!r}: expected one of "
                         f"{', '.join(LR_SCALING_METHODS)}")
    path = d.get("metrics_path")
    if path is not None and (not isinstance(path, str) or not path):
        raise ValueError(f"{where}.metrics_path={path!r}: expected a folder name")
    verbose = d.get("verbose", False)
    if not isinstance(verbose, bool):
        raise ValueError(f"{where}.verbose={verbose!r}: expected true or false")
    cfg = DynamicBatchingConfig(
        enabled=enabled, max_tokens=_int(d, "max_tokens", where, 1, None),
        min_batch_size=_int(d, "min_batch_size", where, 0, 1),
        max_batch_size=_int(d, "max_batch_size", where, 0, None),
        sequence_picking_order=order, lr_scaling_method=method, metrics_path=path,
        verbose=verbose)
    if enabled and cfg.max_tokens is None:
        raise ValueError(f"{where}.max_tokens: required when dynamic batching is enabled")
    if enabled and path is None:
        raise ValueError(f"{where}.metrics_path: required when dynamic batching is enabled "
                         f"(the analyzer's output folder with the seqlen metric: "
                         f"tools/analyze_data.py --metrics seqlen)")
    if cfg.max_batch_size and cfg.min_batch_size and cfg.max_batch_size < cfg.min_batch_size:
        raise ValueError(f"{where}: max_batch_size {cfg.max_batch_size} is below "
                         f"min_batch_size {cfg.min_batch_size}")
    return cfg
