"""Reading a run's results back from its metrics file (``megatron.metrics_file``: the
JSON lines training writes, never its printed log), and the study's outputs:
``study.json``, the paper-shaped ``study.md`` table and the PNG plots."""
from __future__ import annotations

import json
import math
import os
import statistics

from megatron.metrics_file import RunMetrics, read_metrics

LOSS, ACCURACY = "lm loss", "lm accuracy"


def _cumulative_seconds(metrics: RunMetrics) -> dict[int, float]:
    """Training seconds up to each logged step: each step line's per-iteration time times
    the steps since the previous step line (evaluation time is not in it)."""
    total, prev, out = 0.0, 0, {}
    for step in sorted(metrics.steps):
        total += (metrics.steps[step]["iteration_time_s"] or 0.0) * (step - prev)
        prev, out[step] = step, total
    return out


def run_record(metrics_path: str) -> dict:
    """The record of one finished run from its metrics file: final consumed tokens,
    training seconds, whole-split validation loss / perplexity (/ accuracy), and the
    validation curve. Steps a resumed run took again count once (the file's reading
    rules).

    Raises:
        ValueError: when the file holds no validation result (the run did not finish).
    """
    if not os.path.exists(metrics_path):
        raise ValueError(f"{metrics_path}: no metrics file (did the run start?)")
    metrics = read_metrics(metrics_path)
    loss = metrics.eval_series("validation", LOSS)
    if not loss:
        raise ValueError(f"{metrics_path}: no '{LOSS} validation' result (did the run "
                         "finish?)")
    last = metrics.last()
    seconds = _cumulative_seconds(metrics)

    def seconds_at(step: int) -> float:
        return max((v for k, v in seconds.items() if k <= step), default=0.0)

    tokens = {it: int(e["consumed_tokens"]) for (split, it), e in metrics.evals.items()
              if split == "validation"}
    curve = [{"iteration": it, "tokens": tokens[it], "seconds": seconds_at(it), "loss": value}
             for it, value in loss.items()]
    final = loss[max(loss)]
    record = {"iterations": last["iteration"], "consumed_tokens": int(last["consumed_tokens"]),
              "train_seconds": round(seconds_at(last["iteration"]), 3), "val_loss": final,
              "val_ppl": math.exp(min(final, 50.0)), "curve": curve}
    accuracy = metrics.eval_series("validation", ACCURACY)
    if accuracy:
        record["val_accuracy"] = accuracy[max(accuracy)]
    return record


def _mean_spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def _groups(records: list[dict]) -> list[tuple[tuple[str, float], list[dict]]]:
    """Records grouped by (arm, budget), in the order they first appear."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in records:
        groups.setdefault((r["arm"], r["budget_fraction"]), []).append(r)
    return list(groups.items())


def study_table(records: list[dict], title: str) -> str:
    """The paper-shaped markdown table: per (arm, budget) the data and time with their
    ratios to the 100% baseline, validation loss / PPL (/ accuracy) as mean ± standard
    deviation over seeds, and the PPL relative to the 100% baseline."""
    groups = _groups(records)
    base = next((rs for (arm, f), rs in groups if arm == "baseline" and f == 1.0), None)
    mean = lambda rs, k: statistics.mean(r[k] for r in rs)   # noqa: E731
    has_acc = all("val_accuracy" in r for r in records)
    head = ("| Case | budget | data (tokens) | data ratio | time (s) | time ratio "
            "| val loss | val PPL |" + (" val acc |" if has_acc else "") + " PPL vs baseline |")
    lines = [f"# {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for (arm, f), rs in groups:
        ratio = (lambda k: f"{mean(rs, k) / mean(base, k):.2f}x") if base else (lambda k: "-")
        row = (f"| {arm} | {round(f * 100)}% | {mean(rs, 'consumed_tokens'):,.0f} "
               f"| {ratio('consumed_tokens')} | {mean(rs, 'train_seconds'):.1f} "
               f"| {ratio('train_seconds')} "
               f"| {_mean_spread([r['val_loss'] for r in rs], '.4f')} "
               f"| {_mean_spread([r['val_ppl'] for r in rs], '.2f')} |")
        if has_acc:
            row += f" {_mean_spread([r['val_accuracy'] for r in rs], '.4f')} |"
        row += f" {mean(rs, 'val_ppl') / mean(base, 'val_ppl'):.3f}x |" if base else " - |"
        lines.append(row)
    seeds = sorted({r["seed"] for r in records})
    lines += ["", f"Seeds: {', '.join(map(str, seeds))} (loss / PPL / accuracy: mean ± "
              "standard deviation over seeds). Data: layer-weighted consumed tokens, as the "
              "LR schedule counts them. Time: training wall time (evaluation excluded). "
              "Quality: the whole validation split. PPL vs baseline below 1 is better."]
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict], out_dir: str) -> list[str]:
    """``loss_vs_tokens.png`` and ``loss_vs_time.png``: validation loss of every run, one
    colour per arm, one line style per budget, one line per seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = _groups(records)
    arms = list(dict.fromkeys(arm for (arm, _), _ in groups))
    # tab20 has enough distinct colours for every arm of Table 2 plus the pruning arms
    colour = {arm: plt.get_cmap("tab20")(i % 20) for i, arm in enumerate(arms)}
    styles = ("-", "--", ":", "-.")
    budgets = sorted({f for (_, f), _ in groups}, reverse=True)
    style = {f: styles[i % len(styles)] for i, f in enumerate(budgets)}
    paths = []
    for key, label, name in (("tokens", "consumed tokens (layer-weighted)", "loss_vs_tokens"),
                             ("seconds", "training wall time (s)", "loss_vs_time")):
        fig, ax = plt.subplots(figsize=(10, 5.5))
        for (arm, f), rs in groups:
            for j, r in enumerate(rs):
                ax.plot([p[key] for p in r["curve"]], [p["loss"] for p in r["curve"]],
                        color=colour[arm], linestyle=style[f], marker=".", alpha=0.85,
                        label=f"{arm} ({round(f * 100)}%)" if j == 0 else None)
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss (whole split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        path = os.path.join(out_dir, name + ".png")
        fig.tight_layout()
        fig.savefig(path + ".tmp.png", dpi=110)
        plt.close(fig)
        os.replace(path + ".tmp.png", path)
        paths.append(path)
    return paths


def write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_outputs(records: list[dict], meta: dict, out_dir: str, title: str,
                  plots: bool = True) -> list[str]:
    """``study.json`` (the records, without curves, plus ``meta``), ``study.md`` and (with
    ``plots``) the plots; returns their paths."""
    slim = [{k: v for k, v in r.items() if k != "curve"} for r in records]
    write_atomic(os.path.join(out_dir, "study.json"),
                 json.dumps({**meta, "runs": slim}, indent=1) + "\n")
    write_atomic(os.path.join(out_dir, "study.md"), study_table(records, title))
    return [os.path.join(out_dir, "study.json"), os.path.join(out_dir, "study.md"),
            *(plot_curves(records, out_dir) if plots else [])]
