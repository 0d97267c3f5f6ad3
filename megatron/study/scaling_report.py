"""The scaling study's report: ``scaling.md`` (the pre-registered numbers as tables and
the verdict), ``scaling.json`` (the analysis, every per-seed number) and the plots
(``megatron.study.scaling_plots``), from ``megatron.study.scaling.analyse``."""
from __future__ import annotations

import json
import os

from megatron.study import scaling
from megatron.study.presets import Preset

PREREGISTRATION = "docs/preregistration/cpu-scaling.md"


def _fraction(d: dict) -> str:
    """``0.52 ± 0.03`` or ``not reached (1 of 3 seeds)``."""
    if d["fraction_mean"] is None:
        return f"not reached ({d['seeds'] - d['reached']} of {d['seeds']} seeds)"
    return f"{d['fraction_mean']:.3f} ± {d['fraction_sd']:.3f}"


def _per_seed(d: dict, budget: int) -> str:
    return " / ".join("not reached" if t is None else f"{t / budget:.3f}"
                      for _, t in sorted(d["tokens"].items()))


def _ms(d: dict, fmt: str = ".4f") -> str:
    return f"{format(d['mean'], fmt)} ± {format(d['sd'], fmt.lstrip('+'))}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def report_markdown(analysis: dict, title: str) -> str:
    """The report's markdown: verdict, data to the baseline's quality per level, loss at
    equal data, the half-data comparison and the same-steps control."""
    lines = [f"# {title}", ""]
    trend = analysis["trend"]
    if trend is not None:
        first, last = analysis["levels"][0]["name"], analysis["levels"][-1]["name"]
        lines += [f"**The gain {trend['verdict']}** from {first} to {last} (rules: "
                  f"`{PREREGISTRATION}`): {trend['why']}.", ""]
    if analysis["missing_levels"]:
        lines += [f"Levels without their runs: {', '.join(analysis['missing_levels'])}.", ""]
    lines += ["## Data the composed arm needs for the baseline's final loss", "",
              "| budget | tokens | baseline final loss | composed: fraction of the budget | "
              "per seed | same-steps control: fraction | per seed |",
              "|---|---|---|---|---|---|---|"]
    for row in analysis["levels"]:
        budget = row["budget_tokens"]
        target = scaling.mean_sd(list(row["target"].values()))
        control = row.get("control")
        lines.append(
            f"| {row['name']} | {budget:,} | {target[0]:.4f} ± {target[1]:.4f} | "
            f"{_fraction(row['composed'])} | {_per_seed(row['composed'], budget)} | "
            f"{_fraction(control) if control else '-'} | "
            f"{_per_seed(control, budget) if control else '-'} |")
    lines += ["", "Fraction: the tokens the arm's run at that budget has consumed when its "
              "validation curve first reaches the same seed's baseline final loss (linear "
              "interpolation between evaluations; never extrapolated), over the budget; "
              "mean ± standard deviation over seeds.", "",
              "## Loss at equal data", "", "| data | composed / baseline final loss |",
              "|---|---|"]
    lines += [f"| {r['name']} | {_ms(r)} |" for r in analysis["equal_data"]]
    lines += ["", "## Half the data (the paper's headline)", "",
              "| budget | composed at 50% minus baseline at 100% (loss) | equal (within "
              f"{analysis['half_data_margin']}) |", "|---|---|---|"]
    lines += [f"| {r['name']} | {_ms(r['half_data'], '+.4f')} | "
              f"{'yes' if r['half_data']['equal'] else 'no'} |"
              for r in analysis["levels"] if "half_data" in r]
    lines += ["", "## Same-steps control", "",
              "| budget | steps: baseline / control / composed | loss: baseline | control | "
              "composed | share of the gain: more steps | order and routing |",
              "|---|---|---|---|---|---|---|"]
    for r in analysis["levels"]:
        if "same_steps" not in r:
            continue
        c = r["same_steps"]
        steps = " / ".join(f"{c['steps'][k]:.0f}" for k in ("baseline", "control", "composed"))
        loss = " | ".join(_ms(c["loss"][k]) for k in ("baseline", "control", "composed"))
        lines.append(f"| {r['name']} | {steps} | {loss} | {_share(c['steps_share'])} | "
                     f"{_share(c['order_share'])} |")
    lines += ["", "Shares: (baseline - control) and (control - composed) over (baseline - "
              "composed), mean final losses; '-' where the composed arm did not gain."]
    return "\n".join(lines) + "\n"


def write_report(records: list[dict], preset: Preset, out_dir: str, title: str) -> list[str]:
    """``scaling.json``, ``scaling.md`` and the scaling plots; returns their paths."""
    from megatron.study import scaling_plots
    from megatron.study.results import write_atomic
    analysis = scaling.analyse(records, preset)
    md, js = os.path.join(out_dir, "scaling.md"), os.path.join(out_dir, "scaling.json")
    write_atomic(js, json.dumps(analysis, indent=1) + "\n")
    write_atomic(md, report_markdown(analysis, title))
    return [js, md, *scaling_plots.plot_all(records, analysis, out_dir)]
