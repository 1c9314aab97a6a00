"""``reports/bench/``: CSV tables, the Markdown page (README.md) and PNG figures of a bench run.

Ratios are taken within one run (same process, interleaved rounds), never across runs: on a
shared machine absolute times drift, ratios much less.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .cases import LOSS_CASES, SCHEME_CASES
from .runner import BenchResult

#: The goal: a loss at its paper setting costs under this share of a U-Net-resnet18 step.
GOAL_SHARE = 0.05
#: The goal for the harness: studybench's loop at >= this fraction of a bare loop's steps/s.
GOAL_HARNESS = 0.97  # issue 27: within 3 % of a bare loop in wall-clock steps/s
MIB = 2**20


def loss_table(result: BenchResult) -> pd.DataFrame:
    """One row per (loss case, size): time, ratio to CE, share of the model steps, memory."""
    times = pd.DataFrame(result.times)
    rows = []
    for size, group in times.groupby("size", sort=False):
        by_case = group.set_index("case")["median_s"]
        ce, unet = by_case.get("ce", math.nan), by_case.get("unet-r18", math.nan)
        dlv3 = by_case.get("deeplabv3-r50", math.nan)
        ce_mem = result.memory.get(("ce", size), math.nan)
        for _, r in group[group["kind"] == "loss"].iterrows():
            mem = result.memory.get((r["case"], size), math.nan)
            case = LOSS_CASES.get(r["case"])
            rows.append(
                {
                    "case": r["case"],
                    "setting": case.note if case else "registered defaults",
                    "paper": bool(case and case.paper),
                    "size": size,
                    "batch": r["batch"],
                    "classes": r["classes"],
                    "side": r["side"],
                    "ms": 1000 * r["median_s"],
                    "best_ms": 1000 * r["best_s"],
                    "x_ce": r["median_s"] / ce,
                    "share_unet_r18": r["median_s"] / unet,
                    "share_deeplabv3_r50": r["median_s"] / dlv3,
                    "extra_share_unet_r18": (r["median_s"] - ce) / unet,
                    "peak_extra_mib": mem / MIB,
                    "mem_x_ce": _ratio(mem, ce_mem),
                    "unet_r18_step_ms": 1000 * unet,
                    "deeplabv3_r50_step_ms": 1000 * dlv3,
                }
            )
    return pd.DataFrame(rows)


def scheme_table(result: BenchResult) -> pd.DataFrame:
    """SR / DML: a training step of the scheme vs the supervised CE step of the same U-Net."""
    times = pd.DataFrame(result.times)
    schemes = times[times["kind"] == "scheme"]
    rows = []
    for _, r in schemes.iterrows():
        same = times[times["size"] == r["size"]].set_index("case")["median_s"]
        sup = same["unet-r18"]
        mem, sup_mem = (
            result.memory.get((r["case"], r["size"]), math.nan),
            result.memory.get(("unet-r18", r["size"]), math.nan),
        )
        rows.append(
            {
                "case": r["case"],
                "setting": SCHEME_CASES[r["case"]].note,
                "paper": SCHEME_CASES[r["case"]].paper,
                "size": r["size"],
                "step_ms": 1000 * r["median_s"],
                "supervised_step_ms": 1000 * sup,
                "x_supervised": r["median_s"] / sup,
                "extra_share_unet_r18": (r["median_s"] - sup) / sup,
                "peak_extra_mib": mem / MIB,
                "supervised_peak_extra_mib": sup_mem / MIB,
                "mem_x_supervised": _ratio(mem, sup_mem),
            }
        )
    return pd.DataFrame(rows)


def _ratio(a: float, b: float) -> float:
    """a / b, NaN where b is not positive (a cell too small to register any memory)."""
    return a / b if b > 0 else math.nan


def _f(value: float, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def main_table_md(losses: pd.DataFrame, schemes: pd.DataFrame, main: str) -> str:
    """The headline table at the main size (Markdown)."""
    rows = losses[losses["size"] == main]
    lines = [
        "| case | setting | fwd+bwd ms | × CE | % of U-Net-r18 step | % of DeepLabV3-r50 step "
        "| peak extra MiB | memory × CE | under 5 % of U-Net-r18 |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|:-:|",
    ]

    def row(r: pd.Series, share: str, cells: list[str]) -> str:
        verdict = "yes" if r[share] < GOAL_SHARE else "**no**"
        name = f"{r['case']}{' (paper)' if r['paper'] else ''}"
        return "| " + " | ".join([name, r["setting"], *cells, verdict]) + " |"

    for _, r in rows.iterrows():
        cells = [_f(r["ms"], ".1f"), _f(r["x_ce"], ".2f"), _f(100 * r["share_unet_r18"], ".1f")]
        cells += [_f(100 * r["share_deeplabv3_r50"], ".2f"), _f(r["peak_extra_mib"], ".0f"), _f(r["mem_x_ce"], ".2f")]
        lines.append(row(r, "share_unet_r18", cells))
    for _, r in schemes.iterrows():
        cells = [f"step {_f(r['step_ms'], '.0f')}", f"{_f(r['x_supervised'], '.2f')} (× step)"]
        cells += [f"+{_f(100 * r['extra_share_unet_r18'], '.0f')} (extra)", "–"]
        cells += [f"{_f(r['peak_extra_mib'], '.0f')} (step)", f"{_f(r['mem_x_supervised'], '.2f')} (× step)"]
        lines.append(row(r, "extra_share_unet_r18", cells))
    return "\n".join(lines)


def sizes_table_md(losses: pd.DataFrame, column: str, fmt: str, scale: float = 1.0) -> str:
    sizes = list(dict.fromkeys(losses["size"]))
    pivot = losses.pivot(index="case", columns="size", values=column).reindex(list(dict.fromkeys(losses["case"])))
    lines = ["| case | " + " | ".join(sizes) + " |", "|:--|" + "--:|" * len(sizes)]
    for case, r in pivot.iterrows():
        lines.append(f"| {case} | " + " | ".join(_f(scale * r[s], fmt) for s in sizes) + " |")
    return "\n".join(lines)


def sweeps_md(result: BenchResult) -> str:
    lines = ["| sweep | value | fwd+bwd ms | × CE | peak extra MiB | memory × CE |", "|:--|--:|--:|--:|--:|--:|"]
    for r in result.sweeps:
        mem = result.memory.get((r["case"], r["size"]), math.nan)
        ce_mem = result.memory.get(("ce", r["size"]), math.nan)
        lines.append(
            f"| {r['sweep']} | {r['value']} | {_f(1000 * r['median_s'], '.1f')} | {_f(r['median_s'] / r['ce_median_s'], '.2f')} "
            f"| {_f(mem / MIB, '.0f')} | {_f(_ratio(mem, ce_mem), '.2f')} |"
        )
    return "\n".join(lines)


def over_goal(losses: pd.DataFrame, schemes: pd.DataFrame, main: str) -> list[str]:
    """Paper-setting cases at or over 5 % of a U-Net-resnet18 step at the main size."""
    rows = losses[(losses["size"] == main) & losses["paper"] & ~(losses["share_unet_r18"] < GOAL_SHARE)]
    out = [f"{r['case']} ({100 * r['share_unet_r18']:.1f} %)" for _, r in rows.iterrows()]
    if len(schemes):
        srows = schemes[schemes["paper"] & ~(schemes["extra_share_unet_r18"] < GOAL_SHARE)]
        out += [f"{r['case']} (+{100 * r['extra_share_unet_r18']:.0f} % per step)" for _, r in srows.iterrows()]
    return out


def write_report(result: BenchResult, out: Path) -> list[Path]:
    """Write every table, figure and the README of ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    main = result.machine["main_size"]
    losses, schemes = loss_table(result), scheme_table(result)
    files = []

    def save_csv(frame: pd.DataFrame, name: str) -> None:
        if frame.empty:
            return
        frame.to_csv(out / name, index=False, float_format="%.6g")
        files.append(out / name)

    save_csv(losses, "losses.csv")
    save_csv(schemes, "schemes.csv")
    save_csv(pd.DataFrame(result.sweeps), "sweeps.csv")
    save_csv(pd.DataFrame(result.times), "times.csv")
    save_csv(pd.DataFrame(result.loaders), "loaders.csv")
    if result.harness:
        h = result.harness
        save_csv(
            pd.DataFrame(
                {"loop": ["studybench"] * len(h.harness) + ["bare"] * len(h.bare), "steps_s": h.harness + h.bare}
            ),
            "harness.csv",
        )
    main_md = main_table_md(losses, schemes, main)
    (out / "main_table.md").write_text(main_md + "\n")
    files.append(out / "main_table.md")
    (out / "machine.json").write_text(json.dumps(result.machine, indent=2) + "\n")
    (out / "result.json").write_text(json.dumps(result.to_json(), allow_nan=True) + "\n")
    files += [out / "machine.json", out / "result.json"]
    try:
        from .figures import draw_figures

        figures = draw_figures(result, losses, out)
    except Exception as err:  # a plotting failure never loses the measured tables
        figures, result.machine["figure_error"] = [], repr(err)
    files += figures
    (out / "README.md").write_text(page_md(result, losses, schemes, main_md, figures))
    files.append(out / "README.md")
    return files


def page_md(result: BenchResult, losses: pd.DataFrame, schemes: pd.DataFrame, main_md: str, figures: list[Path]) -> str:
    m = result.machine
    main = m["main_size"]
    unet = losses.loc[losses["size"] == main, "unet_r18_step_ms"]
    dlv3 = losses.loc[losses["size"] == main, "deeplabv3_r50_step_ms"]
    over = over_goal(losses, schemes, main)
    parts = [
        "# studybench bench: the cost of every loss, scheme and of the harness",
        "",
        "Made by `studybench bench` (see `machine.json` for the exact grid). Sizes are `BxCxS`: batch, classes, "
        "image side. Times are medians of interleaved rounds after a warm-up round, in one process, so ratios "
        "(× CE, % of a step) are comparable within this page even when the machine's load changes; peak extra "
        "memory is the growth of the peak RSS over one forward + backward (one training step for schemes), each "
        "cell in a fresh process on CPU (`max_memory_allocated` on GPU).",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['torch_threads']} torch threads; GPU: {m['gpu']}",
        *(
            [
                "- No GPU was available to the run that made this page: the GPU path (CUDA events, "
                "`max_memory_allocated`) is implemented but its numbers are not here."
            ]
            if m["gpu"].startswith("none")
            else []
        ),
        f"- python {m['python']}, torch {m['torch']}, segmentation-models-pytorch {m['segmentation_models_pytorch']}, "
        f"numpy {m['numpy']}, studybench {m['studybench']} (git {m['git_commit']}), {m['os']}",
        f"- 1/5/15-min load average before: {m.get('load_average_before')}, after: {m.get('load_average_after')} "
        "(the machine is shared with other jobs: absolute times are noisy, compare ratios)",
        f"- grid: sizes {', '.join(m['sizes'])}; main size {main}; {m['repeats']} timed rounds"
        + (" (quick mode)" if m.get("quick") else ""),
        "",
        f"## Main table ({main})",
        "",
        f"U-Net-resnet18 training step (supervised CE, Adam): {_f(unet.iloc[0] if len(unet) else math.nan, '.0f')} ms; "
        f"DeepLabV3-resnet50 step: {_f(dlv3.iloc[0] if len(dlv3) else math.nan, '.0f')} ms. A loss's share is its "
        "forward + backward time over the step's time (the step itself includes a CE). SR and DML change the step, "
        "so their rows give a whole scheme step against the supervised step and the extra share.",
        "",
        main_md,
        "",
        f"Goal: every loss at its paper setting under {100 * GOAL_SHARE:.0f} % of a U-Net-resnet18 step. "
        + ("At or over it here: " + ", ".join(over) + "." if over else "All paper settings are under it here."),
        "",
        "## All sizes",
        "",
        "Forward + backward ms:",
        "",
        sizes_table_md(losses, "ms", ".1f"),
        "",
        "× CE (time):",
        "",
        sizes_table_md(losses, "x_ce", ".2f"),
        "",
        "% of a U-Net-resnet18 step at the same size:",
        "",
        sizes_table_md(losses, "share_unet_r18", ".1f", 100.0),
        "",
        "Peak extra MiB:",
        "",
        sizes_table_md(losses, "peak_extra_mib", ".0f"),
        "",
    ]
    if result.sweeps:
        parts += [f"## Sweeps ({main})", "", sweeps_md(result), ""]
    if result.harness:
        h = result.harness
        verdict = "meets" if h.ratio >= GOAL_HARNESS else "misses"
        parts += [
            "## Harness overhead",
            "",
            f"studybench's training loop (`train.execute`) vs a bare PyTorch loop, same process, same data, model and "
            f"batch: {', '.join(f'{k} {v}' for k, v in h.setting.items())}.",
            "",
            "| loop | steps/s (median) | rounds |",
            "|:--|--:|--:|",
            f"| studybench | {_median(h.harness):.2f} | {', '.join(f'{x:.2f}' for x in h.harness)} |",
            f"| bare PyTorch | {_median(h.bare):.2f} | {', '.join(f'{x:.2f}' for x in h.bare)} |",
            "",
            f"Ratio studybench / bare: **{h.ratio:.2f}** of the medians ({verdict} the goal ≥ {GOAL_HARNESS}); "
            f"{h.best_ratio:.2f} of the best rounds (less sensitive to load spikes from other jobs).",
            "",
        ]
    if result.loaders:
        parts += [
            "## Data loaders",
            "",
            "| format | size (WxH) | pipeline | workers | images/s (median) | min–max |",
            "|:--|:--|:--|--:|--:|--:|",
        ]
        parts += [
            f"| {r['format']} | {r['size']} | {r['pipeline']} | {r['workers']} | {r['images_s']:.0f} | {r['min']:.0f}–{r['max']:.0f} |"
            for r in result.loaders
        ]
        parts.append("")
    if figures:
        parts += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    if result.memory_errors:
        parts += (
            ["## Cells that failed", ""] + [f"- {c} at {s}: {e}" for (c, s), e in result.memory_errors.items()] + [""]
        )
    return "\n".join(parts)


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def summary(result: BenchResult) -> dict[str, Any]:
    """What the CLI prints at the end."""
    losses, schemes = loss_table(result), scheme_table(result)
    main = result.machine["main_size"]
    return {
        "main_table": main_table_md(losses, schemes, main),
        "over_goal": over_goal(losses, schemes, main),
        "harness_ratio": result.harness.ratio if result.harness else None,
    }
