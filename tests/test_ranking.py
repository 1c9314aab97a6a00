"""Cross-cell ranking: average ranks with ties, Friedman against scipy, Nemenyi CD against Demšar's table."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from studybench.report import ranking

#: 5 cells x 4 methods, with ties inside cells (cells 2 and 4) and a cell where two methods tie at the top.
SCORES = pd.DataFrame(
    {
        "ce": [0.60, 0.55, 0.70, 0.40, 0.52],
        "dice": [0.62, 0.55, 0.68, 0.45, 0.52],
        "rmi": [0.65, 0.58, 0.71, 0.45, 0.55],
        "focal": [0.58, 0.50, 0.66, 0.39, 0.50],
    },
    index=[f"cell{i}" for i in range(5)],
)


def test_average_ranks_with_ties_by_hand():
    ranks = ranking.rank_rows(SCORES, higher_is_better=True)
    # cell1: rmi .58 (1), ce = dice .55 (2.5 each), focal .50 (4); cell3: dice = rmi .45 (1.5 each)
    assert ranks.loc["cell1"].tolist() == [2.5, 2.5, 1.0, 4.0]
    assert ranks.loc["cell3"].tolist() == [3.0, 1.5, 1.5, 4.0]
    expected = {"ce": (3 + 2.5 + 2 + 3 + 2.5) / 5, "dice": (2 + 2.5 + 3 + 1.5 + 2.5) / 5, "rmi": 1.1, "focal": 4.0}
    assert ranks.mean().to_dict() == pytest.approx(expected)
    lower = ranking.rank_rows(SCORES, higher_is_better=False)  # a cost: the smallest value ranks first
    assert lower.loc["cell0"].tolist() == [2.0, 3.0, 4.0, 1.0]


def test_friedman_matches_scipy_with_and_without_ties():
    for scores in (SCORES, SCORES.iloc[[0, 2]], SCORES.round(1)):
        ours = ranking.friedman_test(ranking.rank_rows(scores))
        ref = sps.friedmanchisquare(*[scores[c].to_numpy() for c in scores.columns])
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-12)
        assert (ours.k, ours.n) == (4, len(scores))


def test_iman_davenport_by_formula():
    fr = ranking.friedman_test(ranking.rank_rows(SCORES))
    n, k = 5, 4
    f = (n - 1) * fr.statistic / (n * (k - 1) - fr.statistic)
    assert fr.f == pytest.approx(f)
    assert fr.p_f == pytest.approx(sps.f.sf(f, k - 1, (k - 1) * (n - 1)))


def test_friedman_degenerate_cases():
    tied = pd.DataFrame({"a": [0.5, 0.6], "b": [0.5, 0.6]})
    assert ranking.friedman_test(ranking.rank_rows(tied)).p == 1.0
    with pytest.raises(ValueError, match="at least 2 cells"):
        ranking.friedman_test(ranking.rank_rows(SCORES.iloc[:1]))


def test_q_alpha_is_demsar_table_5a_and_agrees_with_the_studentized_range():
    demsar = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    assert [ranking.q_alpha(k) for k in range(2, 11)] == demsar
    for k, q in zip(range(2, 11), demsar):  # the table is the studentized range / sqrt(2), to 3 decimals
        assert sps.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2) == pytest.approx(q, abs=1.5e-3)
    assert ranking.q_alpha(11) == pytest.approx(3.219, abs=2e-3)  # beyond the table: scipy
    with pytest.raises(ValueError):
        ranking.q_alpha(1)


def test_critical_difference_demsar_example():
    # Demšar (2006), Sec. 3.2.2: four methods over 14 data sets, CD = 2.569 * sqrt(4*5 / (6*14)) = 1.25
    assert ranking.critical_difference(4, 14) == pytest.approx(1.2536, abs=1e-4)
    assert ranking.critical_difference(2, 10) == pytest.approx(1.960 * math.sqrt(2 * 3 / 60))


def test_win_tie_loss_rule():
    assert ranking.outcome(0.02, 0.01, 0.03) == "win"
    assert ranking.outcome(-0.02, -0.03, -0.01) == "loss"
    assert ranking.outcome(0.02, -0.01, 0.05) == "tie"  # the interval contains 0
    assert ranking.outcome(0.0, math.nan, math.nan) == "tie"  # one seed, equal means
    assert ranking.outcome(0.01, math.nan, math.nan) == "win"  # one seed: the sign decides


def _long(seeds: int = 3, noise: float = 0.001) -> pd.DataFrame:
    """cell, method, seed, value: rmi clearly above ce everywhere, dice within seed noise of ce."""
    rng = np.random.default_rng(0)
    rows = []
    for c, cell in enumerate(SCORES.index):
        for seed in range(seeds):
            base = SCORES.loc[cell, "ce"] + rng.normal(0, noise)
            rows.append((cell, "ce", seed, base))
            rows.append((cell, "rmi", seed, base + 0.03 + rng.normal(0, noise)))
            rows.append((cell, "dice", seed, base + rng.normal(0, 0.02)))
        if c == 0:
            rows.append((cell, "extra", 0, 0.9))  # only in one cell: left out of the ranking
    return pd.DataFrame(rows, columns=["cell", "method", "seed", "value"])


def test_rank_over_cells_drops_incomplete_methods_and_counts_wins():
    result = ranking.rank(_long(), "miou", baseline="ce")
    assert result.average.index[0] == "rmi" and result.average["rmi"] == 1.0
    assert result.dropped_methods == ["extra"]
    assert result.friedman is not None and result.cd == pytest.approx(ranking.critical_difference(3, 5))
    wtl = result.wtl().set_index("method")
    assert wtl.loc["rmi"].tolist() == [5, 0, 0]
    assert wtl.loc["dice", "tie"] >= 3  # within noise: mostly ties
    tables = ranking.ranking_tables(result)
    assert [t.stem for t in tables] == ["ranking", "ranking_cells"]
    assert "Friedman" in tables[0].note and "CD =" in tables[0].note and "extra" in tables[0].note
    shown = tables[0].display.set_index("method")["win / tie / loss vs ce"]
    assert shown["rmi"] == "5 / 0 / 0" and shown["ce"] == "baseline"


def test_rank_needs_two_common_methods():
    values = pd.DataFrame({"cell": ["a", "b"], "method": ["ce", "dice"], "seed": [0, 0], "value": [0.5, 0.6]})
    with pytest.raises(ValueError, match="2 methods"):
        ranking.rank(values)


def test_cliques_join_methods_closer_than_cd():
    avg = pd.Series({"a": 1.0, "b": 1.5, "c": 2.4, "d": 3.9})
    assert ranking.cliques(avg, 1.0) == [(0, 1), (1, 2)]
    assert ranking.cliques(avg, 3.0) == [(0, 3)]


def test_cd_diagram_draws(tmp_path):
    fig = ranking.cd_diagram(ranking.rank(_long(), "miou", baseline="ce"))
    path = Path(os.environ.get("STUDYBENCH_FIGURE_DIR", tmp_path)) / "cd_diagram.png"
    fig.savefig(path)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("CD = ") for t in texts) and any(t.startswith("rmi (1.00)") for t in texts)
    assert path.stat().st_size > 5000


def _study_frame(archs: list[str]) -> pd.DataFrame:
    """Runs as ``collect_runs`` returns them: two datasets x ``archs`` x three methods x two seeds."""
    rows = []
    for d, dataset in enumerate(["voc2012", "cityscapes"]):
        for a, arch in enumerate(archs):
            for m, method in enumerate(["ce", "dice", "rmi"]):
                for seed in (0, 1):
                    miou = 0.5 + 0.02 * m + 0.01 * d - 0.01 * a + 0.001 * seed
                    rows.append(
                        {
                            "dataset": dataset,
                            "arch": arch,
                            "method": method,
                            "seed": seed,
                            "groups": "main",
                            "miou": miou,
                        }
                    )
    return pd.DataFrame(rows)


def test_study_report_ranks_when_the_grid_has_two_cells_or_more():
    from types import SimpleNamespace

    study = SimpleNamespace(baseline="ce", grid={"method": ["ce", "dice", "rmi"]})
    tables = ranking.study_tables(_study_frame(["unet", "fpn"]), study)
    assert [t.stem for t in tables] == ["ranking", "ranking_cells"]
    assert tables[0].data["method"].tolist() == ["rmi", "dice", "ce"]
    assert len(tables[1].data) == 4  # 2 datasets x 2 archs
    one = _study_frame(["unet"]).query("dataset == 'voc2012'")
    assert ranking.study_tables(one, study) == []  # a single cell: no ranking


def test_rank_studies_pools_the_cells_of_several_studies(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from studybench.report import collect

    frames = {"a": _study_frame(["unet"]), "b": _study_frame(["unet", "fpn"])}
    frames["b"] = pd.concat([frames["b"], frames["b"].query("method == 'ce'").assign(method="focal")])
    monkeypatch.setattr(collect, "collect_runs", lambda reader, keys: frames[reader])

    def view(name: str):
        return SimpleNamespace(study=SimpleNamespace(study=name, baseline="ce", grid={}), keys=[]), name

    result, tables = ranking.rank_studies([view("a"), view("b")])
    assert result.scores.shape == (6, 3)  # 2 + 4 cells; focal is only in b: left out
    assert result.dropped_methods == ["focal"] and result.baseline == "ce"
    assert all(c.startswith(("a / ", "b / ")) for c in result.scores.index)
    assert result.friedman.n == 6 and result.average.index.tolist() == ["rmi", "dice", "ce"]
    files = ranking.write_ranking(result, tables, tmp_path)
    assert {p.name for p in files} >= {"ranking_a+b.md", "ranking_a+b_cells.csv", "ranking_a+b_cd.png"}
    chosen, chosen_tables = ranking.rank_studies([view("a"), view("b")], methods=["ce", "rmi"])
    assert chosen.average.index.tolist() == ["rmi", "ce"] and "not among the methods chosen" in chosen_tables[0].note
    with pytest.raises(ranking.RankError, match="twice"):
        ranking.rank_studies([view("a"), view("a")])
    with pytest.raises(ranking.RankError, match="no finished run"):
        ranking.rank_studies([view("a")], methods=["ce", "lovasz"])


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("quickstart", "smoke", ("quickstart", "smoke")),
        ("quickstart@", "smoke", ("quickstart", None)),
        ("zhao2019@smoke", None, ("zhao2019", "smoke")),
    ],
)
def test_a_ranked_study_may_name_its_own_profile(text, default, expected):
    from studybench.cli import study_and_profile

    assert study_and_profile(text, default) == expected


def _values(k: int, n: int, seeds: int = 3) -> pd.DataFrame:
    """``cell, method, seed, value`` where every cell ranks method m0 > m1 > ... (same order everywhere)."""
    rows = [
        (f"cell{c}", f"m{m}", s, 0.7 - 0.05 * m + 0.01 * c + 0.001 * s)
        for c in range(n)
        for m in range(k)
        for s in range(seeds)
    ]
    return pd.DataFrame(rows, columns=["cell", "method", "seed", "value"])


def test_note_gives_the_exact_p_and_never_inf_with_few_cells():
    result = ranking.rank(_values(4, 2), "miou", "m0")
    note = ranking.ranking_note(result)
    assert result.friedman.p_exact == pytest.approx(1 / 24)
    assert "permutation p = 0.042" in note and "inf" not in note.lower()
    assert "no pair can ever differ" in note and "fewer than 6" in note
    assert "F is undefined" in note


def test_note_names_a_cell_with_a_missing_seed():
    values = _values(3, 3)
    values.loc[(values["cell"] == "cell1") & (values["method"] == "m2") & (values["seed"] == 2), "value"] = np.nan
    result = ranking.rank(values, "miou", "m0")
    note = ranking.ranking_note(result)
    assert "cell1: m2 2 of 3 seeds" in note
    assert "cell0" not in note.split("missing seed")[1]


def test_many_cells_wilcoxon_holm_separates_and_tables_show_robust_columns():
    result = ranking.rank(_values(3, 8), "miou", "m0")
    assert result.pairs["different"].all()  # 8 cells, same order: each pair p = 2/256, Holm x3 < 0.05
    note = ranking.ranking_note(result)
    assert "pairs that differ: m0 vs m1, m0 vs m2, m1 vs m2" in note
    main = ranking.ranking_tables(result)[0]
    poi = main.data.set_index("method")["poi"]
    assert poi["m1"] == 0.0 and np.isnan(poi["m0"])
    assert any(c.startswith("IQM miou") for c in main.display.columns)
