"""The benchmark suite is outside the package: ``studybench bench`` finds it in a checkout and says
what to do without it; no package module reads the tests."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import studybench
from studybench import bench

PACKAGE = Path(studybench.__file__).resolve().parent


def test_the_suite_loads_from_the_checkout_under_its_own_name():
    runner = bench.load("runner")
    assert runner.__name__ == "studybench_benchmarks.runner"
    assert Path(runner.__file__).parent == bench.SUITE and not bench.SUITE.is_relative_to(PACKAGE)


def test_without_the_suite_bench_names_the_fix_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "SUITE", tmp_path / "benchmarks" / "suite")
    monkeypatch.delitem(sys.modules, bench.PACKAGE, raising=False)
    with pytest.raises(bench.BenchUnavailable, match="source checkout"):
        bench.load("cases")
    with pytest.raises(SystemExit) as exit_info:
        bench.load_or_exit("cases")
    assert exit_info.value.code == 2 and "pip install -e ." in capsys.readouterr().err


def test_no_package_module_reads_the_tests_folder():
    readers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"""["']tests["'/]|fixtures_data""", path.read_text())  # a path into tests/, not a mention
    ]
    assert readers == []
