"""Commands that do not train never import torch (it costs ~4 s of CPU before anything is printed)."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import REPO, SMALL_BASE, run_study


def _benchmark():
    """``benchmarks/light_commands.py``: its probe is what this test runs, so the benchmark stays honest."""
    spec = importlib.util.spec_from_file_location("light_commands", REPO / "benchmarks" / "light_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("light")
    run_study(root, "study: light\nseeds: [0]\nbaseline: ce\n" + SMALL_BASE + "grid:\n  method: [ce, dice]\n")
    return root


def test_listing_status_report_rank_and_ui_leave_torch_unimported(store):
    bench = _benchmark()
    commands = bench.commands(store / "report")
    *light, validate = bench.light_commands([*commands, ["validate", "study.yaml"]], store)
    for command, result in zip(commands, light):
        assert result["rc"] == 0, (command, result)
        assert not result["torch"], f"studybench {' '.join(command)} imported torch"
    assert (store / "report" / "main.csv").is_file()  # the report was really built
    assert validate["rc"] == 0 and validate["torch"]  # the probe does see torch: validate builds models
