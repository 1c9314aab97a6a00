"""`bench --quick` is a first look: small, and never written over the committed reports/bench/."""

from __future__ import annotations

import subprocess

from helpers import REPO

from studybench.bench import load

select_cases = load("cases").select_cases  # benchmarks/suite, outside the package
QUICK_OUT, count_work, make_plan = load("runner").QUICK_OUT, load("runner").count_work, load("runner").make_plan


def test_quick_plan_leaves_out_memory_cells_and_harness():
    losses, schemes = select_cases(None)
    quick = make_plan(losses, schemes, None, "cpu", True)
    full = make_plan(losses, schemes, None, "cpu", False)
    assert not quick.memory and quick.harness is None and quick.repeats == 1
    assert full.memory and full.harness is not None
    assert count_work(quick) < count_work(full) / 5


def test_quick_output_folder_is_git_ignored():
    assert QUICK_OUT.parts[0] == "results" and QUICK_OUT != REPO / "reports" / "bench"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(QUICK_OUT / "README.md")], cwd=REPO, capture_output=True, check=False
    )
    assert ignored.returncode == 0  # 0: ignored
    demo = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=False).stdout
    report = next(line for line in demo.splitlines() if " report " in line)
    out = report.split("--out", 1)[1].split()[0]
    assert subprocess.run(["git", "check-ignore", "-q", f"{out}/README.md"], cwd=REPO, check=False).returncode == 0
