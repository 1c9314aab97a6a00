"""``bench --harness`` compares like with like: both loops start from a trimmed heap, the order
alternates from round to round, and each round gives a wall and a CPU rate of the training alone."""

from __future__ import annotations

import math

import pytest

from studybench.bench import load

harness = load("harness")  # benchmarks/suite, outside the package


def tiny_spec():
    return harness.harness_spec(image_size=32, train_images=8, epochs=2, batch=4, threads=1, device="cpu")


def test_the_bare_loop_returns_freed_heap_first_as_a_run_does(monkeypatch):
    """A run trims the heap before its model is built (``PeakMemory``); the bare loop used to inherit
    the memory the harness's run had just freed, and skipped the page faults a fresh process pays."""
    calls = []

    def spy():
        calls.append(1)
        real()

    real = harness.release_free_heap
    monkeypatch.setattr(harness, "release_free_heap", spy)
    timed = harness.bare_loop(tiny_spec())
    assert calls == [1]
    assert timed.steps == 4  # 2 epochs of 8 images in batches of 4
    assert timed.wall_s > 0 and timed.cpu_s > 0


def test_each_loop_gives_a_wall_and_a_cpu_rate_of_its_training():
    spec = tiny_spec()
    for steps_s, steps_cpu_s in (harness.harness_round(spec), harness.bare_round(spec)):
        assert math.isfinite(steps_s) and steps_s > 0
        assert math.isfinite(steps_cpu_s) and steps_cpu_s > 0


def test_the_loop_that_goes_first_alternates_and_the_warm_up_round_is_dropped(monkeypatch):
    order = []

    def loop(name, rate):
        def run(spec):
            order.append(name)
            rate[0] += 1.0
            return rate[0], 2 * rate[0]

        return run

    monkeypatch.setattr(harness, "harness_round", loop("studybench", [0.0]))
    monkeypatch.setattr(harness, "bare_round", loop("bare", [10.0]))
    result = harness.measure_harness(
        3, image_size=32, train_images=8, epochs=1, batch=4, threads=1, device="cpu", count_syncs=False
    )
    assert order == ["studybench", "bare", "bare", "studybench", "studybench", "bare", "bare", "studybench"]
    assert result.harness == [2.0, 3.0, 4.0] and result.bare == [12.0, 13.0, 14.0]  # round 0 left out
    assert result.harness_cpu == [4.0, 6.0, 8.0] and result.bare_cpu == [24.0, 26.0, 28.0]
    assert "load average" in result.setting
    assert result.paired(cpu=True)[0] == pytest.approx(3.0 / 13.0)
