"""``studybench bench``: runs on a tiny grid, writes its files, finite ratios; cells and errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from studybench.bench import load
from studybench.cli import app
from studybench.losses import list_losses

cases, cells, harness = load("cases"), load("cells"), load("harness")  # benchmarks/suite, outside the package
LOSS_CASES, Size, loss_step, select_cases = cases.LOSS_CASES, cases.Size, cases.loss_step, cases.select_cases
cell_spec, measure_cells = cells.cell_spec, cells.measure_cells
MemoryRecorder, harness_rate, harness_spec = harness.MemoryRecorder, harness.harness_rate, harness.harness_spec
time_interleaved = load("timing").time_interleaved


def run_bench_cli(*args: str):
    """The ``bench`` command in this process (the same code path as the console script)."""
    return CliRunner().invoke(app, ["bench", *args])


def test_bench_quick_writes_tables_and_figures(tmp_path):
    out = tmp_path / "bench"
    done = run_bench_cli(
        "--quick",
        "--losses",
        "ce,lad-k3,center",
        "--skip",
        "memory,harness,loaders,sweeps",
        "--threads",
        "1",
        "--out",
        str(out),
    )
    assert done.exit_code == 0, done.output[-2000:]
    for name in (
        "README.md",
        "main_table.md",
        "losses.csv",
        "times.csv",
        "machine.json",
        "share_unet.png",
        "scaling_side.png",
    ):
        assert (out / name).is_file(), name
    losses = pd.read_csv(out / "losses.csv")
    assert set(losses["case"]) == {"ce", "lad-k3", "center"}
    assert len(losses) == 3 * 2  # two quick sizes
    main = losses[losses["size"] == "2x3x64"]  # the quick main size: both model steps measured there
    for column in ("x_ce", "share_unet_r18", "share_deeplabv3_r50"):
        assert main[column].map(math.isfinite).all(), column
        assert (main[column] > 0).all(), column
    assert losses["share_unet_r18"].map(math.isfinite).all()
    assert (losses.loc[losses["case"] == "ce", "x_ce"] == 1.0).all()
    assert "| lad-k3 (paper) |" in (out / "main_table.md").read_text()
    assert "Machine" in (out / "README.md").read_text()


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'nope'.*rmi-f1.*lad-k5.*dml"):
        select_cases(["nope"])
    done = run_bench_cli("--losses", "ce,nope")
    assert done.exit_code == 2
    assert "unknown loss 'nope'" in done.output and "lad-k7" in done.output


def test_select_cases_always_includes_ce_and_accepts_registered_losses():
    losses, schemes = select_cases(["rmi", "dml", "dice"])
    assert [c.name for c in losses] == ["ce", "rmi", "dice"]
    assert [c.name for c in schemes] == ["dml"]
    every, _ = select_cases(None)
    assert {c.loss for c in every} >= set(list_losses()) - {"cross_entropy"}


@pytest.mark.parametrize("text", ["2x21", "1x21x256", "2x1x256", "2x21x100", "axbxc"])
def test_size_rejects_bad_text(text):
    with pytest.raises(ValueError):
        Size.parse(text)


def test_every_loss_case_runs_forward_backward():
    size = Size(2, 3, 32)
    for case in LOSS_CASES.values():
        loss_step(case, size, torch.device("cpu"))()


def test_interleaved_timing_has_every_case_and_repeat():
    size = Size(2, 3, 32)
    steps = {name: loss_step(LOSS_CASES[name], size, torch.device("cpu")) for name in ("ce", "rmi")}
    timings = time_interleaved(steps, torch.device("cpu"), repeats=2)
    assert {name: len(t.samples) for name, t in timings.items()} == {"ce": 2, "rmi": 2}
    assert all(t.median > 0 for t in timings.values())


def test_memory_cell_in_fresh_process_sees_the_allocation():
    """CE's forward + backward holds at least a logits-sized gradient: 2*21*256*256*4 B = 10.5 MiB."""
    spec = cell_spec("loss", Size(2, 21, 256), 1, loss="ce")
    [(extra, error)] = measure_cells([spec], torch.device("cpu"))
    assert not error
    assert 10.5 * 2**20 <= extra < 200 * 2**20


def test_harness_loop_reports_a_rate():
    spec = harness_spec(image_size=32, train_images=8, epochs=1, batch=4, threads=1, device="cpu")
    assert harness_rate(spec) > 0
    recorder = MemoryRecorder()
    recorder.log_metrics({"a": 1.0})
    assert recorder.metrics == {"a": 1.0}
