"""Which index a curriculum metric's JSON names: this project's analyzer folder
(``index_path``, or DeepSpeed's ``index_to_sample_path`` / ``index_to_metric_path`` naming
files of such a folder) or a DeepSpeed ``DataAnalyzer`` index, read directly."""
from __future__ import annotations

import os

from megatron.data_efficiency.analyzer.deepspeed_index import DeepSpeedIndexPaths, resolve_paths


def index_dir(m: dict, where: str) -> str | DeepSpeedIndexPaths | None:
    """The analyzer folder named by ``index_path`` or DeepSpeed's two file paths, or the
    DeepSpeed ``DataAnalyzer`` index those two paths name (read directly)."""
    folders = {}
    if m.get("index_path") is not None:
        folders["index_path"] = os.path.normpath(m["index_path"])
    ours = True
    for key, fname in (("index_to_sample_path", "sorted_samples.npy"),
                       ("index_to_metric_path", "sample_to_metric.npy")):
        path = m.get(key)
        if path is None:
            continue
        if os.path.basename(os.path.normpath(path)) == fname:
            folders[key] = os.path.dirname(os.path.normpath(path))
        elif os.path.isfile(os.path.join(path, "meta.json")):
            folders[key] = os.path.normpath(path)
        else:
            ours = False
    if not ours:
        return _deepspeed_paths(m, where, folders)
    if len(set(folders.values())) > 1:
        raise ValueError(f"{where}: index paths are contradictory: {folders}")
    return next(iter(folders.values()), None)


def _deepspeed_paths(m: dict, where: str, folders: dict) -> DeepSpeedIndexPaths:
    """DeepSpeed's analyzer files named by ``index_to_sample_path`` / ``index_to_metric_path``
    (both must name the same metric's pair; ``index_path`` cannot be given with them)."""
    if folders:
        raise ValueError(f"{where}: {sorted(folders)} name this project's index folder but "
                         f"the other index path names DeepSpeed analyzer files: contradictory")
    found = {}
    for key in ("index_to_sample_path", "index_to_metric_path"):
        if m.get(key) is None:
            continue
        try:
            found[key] = resolve_paths(m[key])
        except (OSError, ValueError) as err:
            raise ValueError(f"{where}.{key}={m[key]!r}: neither this project's analyzer "
                             f"folder nor a DeepSpeed DataAnalyzer index ({err})") from None
    if len({(p.index_to_sample, p.index_to_metric) for p in found.values()}) > 1:
        raise ValueError(f"{where}: index_to_sample_path and index_to_metric_path name "
                         f"different DeepSpeed indexes: {found}")
    return next(iter(found.values()))
