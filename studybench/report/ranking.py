"""Ranking methods over many cells: average ranks, the Friedman test, Wilcoxon-Holm cliques, robust aggregates.

A paired t test (``stats``) answers "is method A better than the baseline *in this cell*". Over
many cells (datasets x architectures x other axes, within one study or across studies) the
question becomes "which methods are better *in general*", and averaging mIoU over cells would
let one easy dataset dominate. Following Demšar (2006) each cell is a block: the methods are
ranked within it (1 = best, ties get the average of the ranks they span), the ranks are
averaged over cells, the Friedman test asks whether the average ranks differ more than chance
would (with an exact permutation p-value up to 30 cells, ``permutation``: the chi-square and
Iman-Davenport approximations are far too small with few cells). Which pairs differ is decided by
pairwise Wilcoxon signed-rank tests with Holm's correction (``posthoc``; Benavoli et al. 2016),
not by Nemenyi's mean-rank test, whose verdict on A vs B depends on the other methods ranked.
Nemenyi's critical difference ``CD = q_α · sqrt(k(k+1) / (6N))`` is still printed, with what
it implies for power (with 2 cells and 4 methods no pair could ever differ by it). Beside the
ranks: the interquartile mean and the probability of improvement over the baseline with
stratified-bootstrap intervals (``aggregate``, Agarwal et al. 2021).

A cell's score is the method's mean over seeds. Only complete blocks are ranked: the methods
present in every cell (cells missing one of them are dropped), and what was left out is listed,
as is every cell where a method has fewer seeds with a value than the cell has seeds.

Beside the ranks, a win/tie/loss count against the baseline, cell by cell. The rule: the
paired per-seed difference (method - baseline, sign turned for lower-is-better metrics) is a
*tie* when its 95 % t interval contains 0 or the means are equal, a *win* when it is above 0,
a *loss* when below; with one seed there is no interval and the sign of the difference decides.

Reference: J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets",
JMLR 7 (2006) 1-30: Sec. 3.2.2 (Friedman, Iman-Davenport, Nemenyi), Table 5(a) (q_α), Fig. 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

import studybench.report.aggregate as aggregate
import studybench.report.permutation as permutation
import studybench.report.posthoc as posthoc
import studybench.report.stats as stats
from studybench.report.collect import in_group, label, main_axes
from studybench.report.tables import COSTS, Table, method_order

#: Demšar (2006), Table 5(a): critical values q_0.05 of the two-tailed Nemenyi test, k = 2..10
#: (the studentized range statistic divided by sqrt(2)).
Q_005 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
ALPHA = 0.05
#: Metrics where lower is better (costs); every other metric (mIoU, accuracies) is higher-is-better.
LOWER_IS_BETTER = frozenset(COSTS)
WTL_RULE = (
    "win/tie/loss against {baseline}, cell by cell: tie when the 95% t interval of the paired per-seed "
    "difference contains 0 or the means are equal, otherwise win or loss by its sign; with one seed, by the "
    "sign of the difference alone"
)


@dataclass(frozen=True)
class Friedman:
    """Friedman's chi-square (tie-corrected, as scipy), Iman-Davenport's F (NaN where undefined), their p-values,
    and the permutation p-value (NaN beyond ``permutation.MAX_CELLS`` cells) with how it was computed."""

    k: int  # methods
    n: int  # cells (blocks)
    statistic: float
    p: float
    f: float
    p_f: float
    p_exact: float = math.nan
    exact: str = ""

    @property
    def p_best(self) -> float:
        """The p-value to read: the permutation p where there is one, else Iman-Davenport's."""
        return self.p_exact if not math.isnan(self.p_exact) else self.p_f


@dataclass
class Ranking:
    """Methods ranked over cells; see the module docstring for every rule."""

    metric: str
    higher_is_better: bool
    scores: pd.DataFrame  # cell x method: mean over seeds
    ranks: pd.DataFrame  # cell x method: 1 = best, ties averaged
    average: pd.Series  # method -> average rank, best first
    friedman: Friedman | None  # None with fewer than 2 cells or 2 methods
    cd: float | None
    baseline: str | None = None
    outcomes: pd.DataFrame | None = None  # cell x method: "win" / "tie" / "loss" against the baseline
    dropped_methods: list[str] = field(default_factory=list)
    dropped_cells: list[str] = field(default_factory=list)
    chosen: bool = False  # the methods were chosen by the caller (not: those in every cell)
    pairs: pd.DataFrame | None = None  # Wilcoxon-Holm per pair of methods (posthoc.wilcoxon_holm)
    robust: pd.DataFrame | None = None  # IQM and probability of improvement (aggregate.summary)
    short: list[str] = field(default_factory=list)  # "cell: method 2 of 3 seeds" where a value is missing

    def wtl(self) -> pd.DataFrame:
        """Per method: wins, ties and losses against the baseline over the cells."""
        if self.outcomes is None:
            return pd.DataFrame(columns=["method", "win", "tie", "loss"])
        rows = [
            {"method": m, **{o: int((self.outcomes[m] == o).sum()) for o in ("win", "tie", "loss")}}
            for m in self.average.index
            if m != self.baseline
        ]
        return pd.DataFrame(rows, columns=["method", "win", "tie", "loss"])


# ----------------------------------------------------------------------------- statistics
def rank_rows(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.DataFrame:
    """Rank the methods (columns) within each cell (row): 1 = best, tied scores share their average rank."""
    sign = -1.0 if higher_is_better else 1.0
    ranked = np.vstack([sps.rankdata(sign * row, method="average") for row in scores.to_numpy(dtype=float)])
    return pd.DataFrame(ranked, index=scores.index, columns=scores.columns)


def friedman_test(ranks: pd.DataFrame) -> Friedman:
    """Friedman's test on within-cell ranks (N cells x k methods).

    ``chi2 = (12 / (N k (k+1)) · Σ_j R_j² - 3 N (k+1)) / C`` with ``R_j`` the rank sums and ``C`` the
    tie correction ``1 - Σ (t³ - t) / (N k (k² - 1))`` (scipy's ``friedmanchisquare``); p from
    chi-square with k - 1 degrees of freedom. Iman-Davenport's ``F = (N-1) chi2 / (N(k-1) - chi2)``
    with (k-1, (k-1)(N-1)) degrees of freedom is less conservative (Demšar recommends it).
    """
    r = ranks.to_numpy(dtype=float)
    n, k = r.shape
    if n < 2 or k < 2:
        raise ValueError(f"the Friedman test needs at least 2 cells and 2 methods, got {n} cells and {k} methods")
    ties = sum(float(((c**3) - c).sum()) for row in r for c in [np.unique(row, return_counts=True)[1]])
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every cell ties every method: no evidence of any difference
        return Friedman(k, n, 0.0, 1.0, 0.0, 1.0, 1.0, "every method tied in every cell")
    chi2 = (12.0 / (n * k * (k + 1)) * float((r.sum(axis=0) ** 2).sum()) - 3.0 * n * (k + 1)) / correction
    p = float(sps.chi2.sf(chi2, k - 1))
    p_exact, exact = permutation.friedman_p(r) if n <= permutation.MAX_CELLS else (math.nan, "")
    denom = n * (k - 1) - chi2
    if denom <= 1e-9 * n * k:  # the same order in every cell: F is infinite, its F-distribution p meaningless
        return Friedman(k, n, chi2, p, math.nan, math.nan, p_exact, exact)
    f = (n - 1) * chi2 / denom
    return Friedman(k, n, chi2, p, f, float(sps.f.sf(f, k - 1, (k - 1) * (n - 1))), p_exact, exact)


def q_alpha(k: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical value for ``k`` methods: Demšar's Table 5(a) for α = 0.05 and k <= 10.

    Beyond the table, the same quantity from scipy: the studentized range's 1 - α quantile
    (infinite degrees of freedom) divided by sqrt(2).
    """
    if k < 2:
        raise ValueError(f"a critical difference needs at least 2 methods, got {k}")
    if alpha == ALPHA and k in Q_005:
        return Q_005[k]
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's ``CD = q_α · sqrt(k(k+1) / (6N))`` for k methods over N cells (Demšar 2006, Sec. 3.2.2)."""
    if n < 1:
        raise ValueError(f"a critical difference needs at least 1 cell, got {n}")
    return q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def outcome(diff: float, lo: float, hi: float) -> str:
    """``win``/``tie``/``loss`` of a paired difference oriented so that positive is better (``WTL_RULE``)."""
    if diff == 0 or (not math.isnan(lo) and lo <= 0 <= hi):
        return "tie"
    if math.isnan(diff):
        return "-"
    return "win" if diff > 0 else "loss"


# ----------------------------------------------------------------------------- from runs to a ranking
def cell_values(frame: pd.DataFrame, metric: str, prefix: str = "") -> pd.DataFrame:
    """Main-grid runs of one study as ``cell, method, seed, value``; ``cell`` names dataset, arch and other axes."""
    main = frame[in_group(frame, "main")] if "groups" in frame else frame
    cols = ["dataset", "arch", *main_axes(main)] if "groups" in main else ["dataset", "arch"]
    cells = main[cols].apply(lambda r: " / ".join(label(v) for v in r), axis=1) if len(main) else pd.Series([])
    if prefix:
        cells = prefix + " / " + cells.astype(str)
    values = main[metric] if metric in main else pd.Series(np.nan, index=main.index)
    return pd.DataFrame({"cell": cells, "method": main["method"], "seed": main["seed"], "value": values})


def count_cells(frame: pd.DataFrame) -> int:
    """How many (dataset, arch, other axes) cells the main grid of a study's runs has."""
    return int(cell_values(frame, "miou")["cell"].nunique()) if len(frame) else 0


def rank(
    values: pd.DataFrame,
    metric: str = "miou",
    baseline: str | None = None,
    methods: list[str] | None = None,
    order: list[str] | None = None,
) -> Ranking:
    """Rank the methods of ``values`` (``cell, method, seed, value``) over their cells.

    ``methods`` restricts the ranking (cells lacking one are dropped); by default the methods
    present in every cell are ranked. ``order`` breaks ties in the listing (e.g. the study's).
    """
    short = short_cells(values)
    values = values.dropna(subset=["value"])
    wide = values.pivot_table(index="cell", columns="method", values="value", aggfunc="mean", sort=False)
    all_methods = list(wide.columns)
    if methods is None:
        keep = [m for m in wide.columns if wide[m].notna().all()]
    else:
        unknown = sorted(set(methods) - set(wide.columns))
        if unknown:
            raise ValueError(f"method(s) {unknown} have no finished run; available: {', '.join(sorted(wide.columns))}")
        keep = list(methods)
    scores = wide[keep].dropna(axis=0, how="any")
    if scores.shape[1] < 2 or scores.empty:
        raise ValueError(
            f"ranking needs 2 methods present in the same cells; methods per cell: {wide.notna().sum(axis=1).to_dict()}"
        )
    higher = metric not in LOWER_IS_BETTER
    ranks = rank_rows(scores, higher)
    tiebreak = {m: i for i, m in enumerate(order or [])}
    average = ranks.mean(axis=0)
    average = average.iloc[
        sorted(range(len(average)), key=lambda i: (average.iloc[i], tiebreak.get(average.index[i], 1e9)))
    ]
    n, k = scores.shape[0], scores.shape[1]
    friedman = friedman_test(ranks) if n >= 2 else None
    cd = critical_difference(k, n) if n >= 2 else None
    result = Ranking(metric, higher, scores, ranks, average, friedman, cd, baseline)
    result.dropped_methods = [m for m in all_methods if m not in keep]
    result.chosen = methods is not None
    result.dropped_cells = [c for c in wide.index if c not in scores.index]
    result.short = short
    if baseline in keep:
        result.outcomes = _outcomes(values[values["cell"].isin(scores.index)], scores, baseline, higher)
    if n >= 2:
        result.pairs = posthoc.wilcoxon_holm(scores[list(average.index)] * (1.0 if higher else -1.0))
    kept = values[values["cell"].isin(scores.index)]
    result.robust = aggregate.summary(kept, list(average.index), list(scores.index), baseline, 1.0 if higher else -1.0)
    return result


def short_cells(values: pd.DataFrame) -> list[str]:
    """``cell: method 2 of 3 seeds`` for each method with fewer values than its cell has seeds (a run missing or NaN)."""
    seeds = values.groupby("cell", sort=False)["seed"].nunique()
    have = values.dropna(subset=["value"]).groupby(["cell", "method"], sort=False)["seed"].nunique()
    out = []
    for cell, total in seeds.items():
        for method in dict.fromkeys(values.loc[values["cell"] == cell, "method"]):
            got = int(have.get((cell, method), 0))
            if got < total:
                out.append(f"{cell}: {method} {got} of {total} seeds")
    return out


def _outcomes(values: pd.DataFrame, scores: pd.DataFrame, baseline: str, higher: bool) -> pd.DataFrame:
    """Cell x method ``win``/``tie``/``loss`` against ``baseline`` (paired by seed, ``stats.paired_test``)."""
    sign = 1.0 if higher else -1.0
    out = pd.DataFrame("-", index=scores.index, columns=scores.columns, dtype=object)
    for cell, group in values.groupby("cell", sort=False):
        by_seed = group.pivot_table(index="seed", columns="method", values="value", aggfunc="mean")
        for method in scores.columns:
            if method == baseline:
                continue
            res = stats.paired_test(sign * by_seed[method].to_numpy(), sign * by_seed[baseline].to_numpy())
            out.loc[cell, method] = outcome(res.diff, res.lo, res.hi)
    return out


def study_ranking(frame: pd.DataFrame, study: Any, metric: str = "miou") -> Ranking | None:
    """The ranking inside one study's report: only when its main grid has at least 2 cells and 2 methods."""
    if count_cells(frame) < 2 or frame["method"].nunique() < 2:
        return None
    order = method_order(study, list(frame["method"].dropna().unique()))
    return rank(cell_values(frame, metric), metric, study.baseline, order=order)


def study_tables(frame: pd.DataFrame, study: Any) -> list[Table]:
    """The ranking tables of one study's report; none when its main grid has fewer than 2 cells."""
    result = study_ranking(frame, study)
    return [] if result is None else ranking_tables(result)


def studies_values(studies: list[tuple[str, pd.DataFrame]], metric: str = "miou") -> pd.DataFrame:
    """``cell, method, seed, value`` of several studies' runs; cells are prefixed by the study when there are two or more.

    Methods are matched across studies by their name in the study files (``ce`` in one study is
    ``ce`` in the other), so name methods alike only when they are the same configuration.
    """
    prefix = len(studies) > 1
    parts = [cell_values(frame, metric, name if prefix else "") for name, frame in studies if len(frame)]
    if not parts:
        raise ValueError("no finished runs in the studies given")
    return pd.concat(parts, ignore_index=True)


class RankError(ValueError):
    """The studies given cannot be ranked (no runs, fewer than 2 common methods, an unknown method)."""


def rank_studies(
    views: list[tuple[Any, Any]],
    metric: str = "miou",
    methods: list[str] | None = None,
    baseline: str | None = None,
) -> tuple[Ranking, list[Table]]:
    """Rank methods over the cells of several studies, each read as ``(api.StudyView, StudyReader)``.

    Each study contributes exactly its grid's runs (the newest FINISHED run per key of its
    manifest); ``baseline`` defaults to the studies' baseline when they all name the same one.
    """
    from studybench.report.collect import collect_runs

    studies = [(view.study.study, collect_runs(reader, view.keys)) for view, reader in views]
    names = [name for name, _ in studies]
    if len(set(names)) != len(names):
        raise RankError(f"a study was given twice: {', '.join(names)}")
    if baseline is None:
        baselines = {view.study.baseline for view, _ in views}
        baseline = baselines.pop() if len(baselines) == 1 else None
    order: list[str] = []
    for (view, _), (_, frame) in zip(views, studies):
        order += method_order(view.study, list(frame["method"].dropna().unique())) if len(frame) else []
    try:
        result = rank(studies_values(studies, metric), metric, baseline, methods, list(dict.fromkeys(order)))
    except ValueError as err:
        raise RankError(str(err)) from None
    stem = "ranking" if len(studies) == 1 else "ranking_" + "+".join(names)
    return result, ranking_tables(result, "ranking" if len(stem) > 100 else stem)


def write_ranking(result: Ranking, tables: list[Table], out_dir: Path) -> list[Path]:
    """The tables (Markdown, CSV, LaTeX) and, with 2 cells or more, the CD diagram (PNG, PDF) in ``out_dir``."""
    from studybench.report.plots import save
    from studybench.report.tables import write_table

    files = [path for table in tables for path in write_table(table, Path(out_dir))]
    if result.cd is not None:
        files += save(cd_diagram(result), Path(out_dir), tables[0].stem + "_cd")
    return files


# ----------------------------------------------------------------------------- tables
def ranking_tables(result: Ranking, stem: str = "ranking") -> list[Table]:
    """``<stem>`` (average rank, mean score, win/tie/loss per method) and ``<stem>_cells`` (score and rank per cell)."""
    n, k = result.scores.shape
    scale, unit = (100.0, " (%)") if result.metric not in LOWER_IS_BETTER else (1.0, "")
    wtl = result.wtl().set_index("method")
    data = pd.DataFrame(
        {
            "method": result.average.index,
            "average_rank": result.average.to_numpy(),
            f"mean_{result.metric}": result.scores[result.average.index].mean(axis=0).to_numpy(),
        }
    )
    disp = pd.DataFrame({"method": data["method"], "average rank": data["average_rank"].map(lambda r: f"{r:.2f}")})
    disp[f"mean {result.metric}{unit} over cells"] = data[f"mean_{result.metric}"].map(lambda v: f"{scale * v:.2f}")
    if result.outcomes is not None:
        for col in ("win", "tie", "loss"):
            data[col] = [wtl[col].get(m, np.nan) if m != result.baseline else np.nan for m in data["method"]]
        disp["win / tie / loss vs " + str(result.baseline)] = [
            "baseline" if m == result.baseline else f"{wtl['win'][m]} / {wtl['tie'][m]} / {wtl['loss'][m]}"
            for m in data["method"]
        ]
    if result.robust is not None:
        _add_robust(result, data, disp, scale, unit)
    title = f"Ranking of {k} methods over {n} cells by {result.metric} (1 = best)"
    main = Table(stem, title, data, disp, ranking_note(result))
    cells = result.scores[result.average.index]
    cell_data = cells.reset_index().rename(columns={"index": "cell"})
    cell_disp = pd.DataFrame({"cell": cells.index})
    for m in cells.columns:
        marks = result.outcomes[m] if result.outcomes is not None else None
        cell_disp[m] = [
            f"{scale * cells.loc[c, m]:.2f} ({result.ranks.loc[c, m]:g})"
            + ("" if marks is None or marks[c] == "-" else f" {marks[c][0].upper()}")
            for c in cells.index
        ]
    note = f"{result.metric}{unit}, mean over seeds, with the method's rank in the cell in parentheses"
    if result.outcomes is not None:
        note += "; W/T/L: " + WTL_RULE.format(baseline=result.baseline)
    per_cell = Table(f"{stem}_cells", f"Scores and ranks per cell ({result.metric})", cell_data, cell_disp, note + ".")
    return [main, per_cell]


def _add_robust(result: Ranking, data: pd.DataFrame, disp: pd.DataFrame, scale: float, unit: str) -> None:
    """IQM and probability-of-improvement columns (numbers to ``data``, ``value [lo, hi]`` text to ``disp``)."""
    robust = result.robust.set_index("method").reindex(data["method"])
    for col in robust.columns:
        data[col] = robust[col].to_numpy()
    disp[f"IQM {result.metric}{unit} [95% bootstrap]"] = [
        f"{scale * r.iqm:.2f} [{scale * r.iqm_lo:.2f}, {scale * r.iqm_hi:.2f}]" for r in robust.itertuples()
    ]
    if robust["poi"].notna().any():
        disp[f"P(> {result.baseline}) [95% bootstrap]"] = [
            "baseline"
            if m == result.baseline
            else "-"
            if pd.isna(r.poi)
            else f"{r.poi:.2f} [{r.poi_lo:.2f}, {r.poi_hi:.2f}]"
            for m, r in zip(robust.index, robust.itertuples())
        ]


def ranking_note(result: Ranking) -> str:
    """The ranking table's note: the rules, the Friedman test, which pairs differ, its power, what was left out."""
    parts = ["Ranks within each cell (ties get the average rank), averaged over cells."]
    if result.friedman is None:
        parts.append("One cell: no Friedman test, no pairwise test and no critical difference.")
    else:
        parts += [friedman_text(result.friedman), pairs_text(result), cd_text(result.friedman.k, result.friedman.n)]
    if result.robust is not None:
        parts.append(ROBUST_RULE.format(baseline=result.baseline or "the baseline"))
    if result.outcomes is not None:
        parts.append(WTL_RULE.format(baseline=result.baseline).capitalize() + ".")
    if result.short:
        parts.append(f"Cells with a missing seed (mean and tests over the seeds present): {'; '.join(result.short)}.")
    if result.dropped_methods:
        why = "not among the methods chosen" if result.chosen else "not in every cell"
        parts.append(f"Left out ({why}): {', '.join(result.dropped_methods)}.")
    if result.dropped_cells:
        parts.append(f"Cells left out (a ranked method missing): {', '.join(result.dropped_cells)}.")
    return " ".join(parts)


ROBUST_RULE = (
    "IQM: interquartile mean of all runs pooled over cells; P(>{baseline}): probability that a run beats a run of "
    "{baseline} in the same cell, averaged over cells; both with 95% stratified-bootstrap intervals (runs resampled "
    "within cells, Agarwal et al. 2021), rough with few seeds."
)


def friedman_text(fr: Friedman) -> str:
    """Friedman's chi-square, the permutation p where computed, and Iman-Davenport's F (or why it is undefined)."""
    text = f"Friedman test over N = {fr.n} cells, k = {fr.k} methods: chi2 = {fr.statistic:.2f}"
    if not math.isnan(fr.p_exact):
        text += f", permutation p = {_p(fr.p_exact)} ({fr.exact}; the chi-square approximation gives {_p(fr.p)})"
    else:
        text += f", p = {_p(fr.p)}"
    if math.isnan(fr.f):
        return text + "; Iman-Davenport F is undefined (every cell ranks the methods in the same order)."
    return text + f"; Iman-Davenport F = {fr.f:.2f}, F-distribution p = {_p(fr.p_f)}."


def pairs_text(result: Ranking) -> str:
    """Which pairs the Wilcoxon-Holm tests separate, and whether they could at this number of cells."""
    n = result.friedman.n if result.friedman else 0
    text = f"Pairs: two-sided {posthoc.TEST_NAME} at alpha = {posthoc.ALPHA} over the cells' mean scores"
    if n < posthoc.min_cells():
        return text + f"; with {n} cells (fewer than {posthoc.min_cells()}) no pair can reach p < 0.05."
    different = result.pairs[result.pairs["different"]] if result.pairs is not None else []
    found = ", ".join(f"{a} vs {b}" for a, b in zip(different["a"], different["b"])) if len(different) else "none"
    return text + f"; pairs that differ: {found}."


def cd_text(k: int, n: int) -> str:
    """Nemenyi's critical difference with what it implies: the smallest average-rank gap it could ever declare."""
    cd = critical_difference(k, n)
    text = f"Nemenyi critical difference (Demšar 2006): CD = {cd:.2f} ranks"
    if cd > k - 1:
        return text + f" exceeds the largest possible gap ({k - 1}) with {n} cells: no pair can ever differ by it."
    smallest = math.ceil(2 * n * cd - 1e-9) / (2 * n)  # average ranks move in steps of 1/(2N) (ties: half ranks)
    return text + f": only gaps of {smallest:g}+ ranks (of at most {k - 1}) can be significant with {n} cells."


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ----------------------------------------------------------------------------- figure
def cliques(average: pd.Series, cd: float) -> list[tuple[int, int]]:
    """Nemenyi's cliques: maximal runs ``(first, last)`` of methods (in ``average`` order) whose ranks differ by < ``cd``.

    Kept for callers; the CD diagram draws ``posthoc.cliques`` (Wilcoxon-Holm) instead.
    """
    r = average.to_numpy(dtype=float)
    out: list[tuple[int, int]] = []
    for i in range(len(r)):
        j = max(j for j in range(i, len(r)) if r[j] - r[i] < cd)
        if j > i and (not out or j > out[-1][1]):
            out.append((i, j))
    return out


def cd_diagram(result: Ranking):
    """Demšar's critical-difference diagram: the rank axis (1 = best, left), each method's average rank,
    bars joining methods not significantly different, and the CD interval above the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if result.cd is None or result.friedman is None:
        raise ValueError("a critical-difference diagram needs at least 2 cells")
    avg, k = result.average, len(result.average)
    left = (k + 1) // 2  # the better half is labelled on the left
    rows = max(left, k - left)
    fig, ax = plt.subplots(figsize=(7.0, 1.1 + 0.3 * rows))
    lo, hi = 1, max(k, math.ceil(avg.max()))
    ax.set_xlim(lo - 0.6, hi + 0.6)
    ax.set_ylim(0.35 + 0.45 * rows, -1.0)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="black", lw=1)
    for tick in range(lo, hi + 1):
        ax.vlines(tick, -0.12, 0, color="black", lw=1)
        ax.text(tick, -0.2, str(tick), ha="center", va="bottom", fontsize=8)
    ax.hlines(-0.72, lo, lo + result.cd, color="black", lw=1.5)
    ax.vlines([lo, lo + result.cd], -0.8, -0.64, color="black", lw=1)
    ax.text(lo + result.cd / 2, -0.8, f"CD = {result.cd:.2f}", ha="center", va="bottom", fontsize=8)
    for i, (method, r) in enumerate(avg.items()):
        on_left = i < left
        y = 0.55 + 0.45 * (i if on_left else k - 1 - i)
        x_text = lo - 0.5 if on_left else hi + 0.5
        ax.plot([r, r, x_text], [0, y, y], color="black", lw=0.8)
        ax.text(x_text, y, f"{method} ({r:.2f})", ha="right" if on_left else "left", va="center", fontsize=8)
    groups = posthoc.cliques(list(avg.index), result.pairs) if result.pairs is not None else []
    for n, (i, j) in enumerate(groups):
        y = 0.2 + 0.12 * n
        ax.hlines(y, avg.iloc[i] - 0.03, avg.iloc[j] + 0.03, color="tab:red", lw=3)
    fr = result.friedman
    ax.set_title(
        f"Average rank by {result.metric} over {fr.n} cells (1 = best); Friedman p = {_p(fr.p_best)}; "
        f"bars: no significant difference ({posthoc.TEST_NAME}, α = {posthoc.ALPHA})",
        fontsize=8,
    )
    return fig


__all__ = [
    "ALPHA",
    "Q_005",
    "WTL_RULE",
    "Friedman",
    "RankError",
    "Ranking",
    "cd_diagram",
    "cell_values",
    "cliques",
    "count_cells",
    "critical_difference",
    "friedman_test",
    "outcome",
    "q_alpha",
    "rank",
    "rank_rows",
    "rank_studies",
    "ranking_tables",
    "studies_values",
    "study_ranking",
    "study_tables",
    "write_ranking",
]
