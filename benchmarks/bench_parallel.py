"""Parallel speed-up of ``studybench run --workers 2`` against sequential, end to end.

A 4-run CPU grid (two losses x two seeds, one torch thread per run) is run by the real CLI
into fresh stores: sequentially, with two workers (the process pool: starting the local MLflow
server and forking the workers included) and, with ``--ray``, on a local Ray instance with
the same two runs at once (the engine ``--workers`` could have been built on). Prints the wall
time of each command, the time to the first run (command start to the first MLflow run's
start), the speed-up (goal >= 1.7x on 2 cores) and the load average, since other processes on
the machine distort it. Rounds interleave the modes (in reverse order every other round, so a
drifting load favours neither) and the summary gives each mode's median over the rounds: the
speed-up as the median of the rounds' own ratios, and the time to the first run.

    .venv/bin/python benchmarks/bench_parallel.py [--epochs 24] [--workers 2] [--rounds 2] [--ray] [--figure F.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """\
study: parallel-bench
seeds: [0, 1]
base:
  data: {{dataset: synthetic, options: {{num_classes: 5, image_size: 64, train_images: 48, val_images: 16}}}}
  model: {{arch: unet, encoder: resnet18, options: {{decoder_channels: [64, 32, 16, 16, 8]}}}}
  train: {{epochs: {epochs}, batch_size: 8, optimizer: adam, lr: 0.003, threads: 1}}
grid:
  method: [ce, focal]
"""


def timed_run(folder: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds of the whole command, seconds from its start to the first run's start)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "studybench.cli", "run", "study.yaml", *extra]
    started_at = time.time()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, first_run_start(folder) - started_at


def first_run_start(folder: Path) -> float:
    """Unix time at which the first training run of the study started (its MLflow start time)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("parallel-bench")
    return min(run.info.start_time for run in client.search_runs([exp.experiment_id])) / 1000


def measure(args: argparse.Namespace, modes: list[tuple[str, tuple[str, ...]]]) -> dict[str, list[tuple]]:
    """(wall s, first run s, load) per mode and round; rounds interleave the modes, every other one in reverse
    order, so a drifting load hits each alike."""
    times: dict[str, list[tuple]] = {mode: [] for mode, _ in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for mode, extra in modes if round_ % 2 == 0 else modes[::-1]:
                folder = Path(tmp) / f"{round_}-{mode.replace(' ', '').replace('-', '').replace(',', '')}"
                folder.mkdir()
                (folder / "study.yaml").write_text(STUDY.format(epochs=args.epochs))
                load = os.getloadavg()[0]
                times[mode].append((*timed_run(folder, *extra), load))
                print(f"round {round_ + 1} {mode}: {times[mode][-1][0]:.1f} s", file=sys.stderr, flush=True)
    return times


def plot(times: dict[str, list[tuple]], path: Path, title: str) -> None:
    """Two panels: median wall time (with its first-run delay) and speed-up over sequential, per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    modes = list(times)
    wall = np.array([np.median([t[0] for t in times[m]]) for m in modes])
    first = np.array([np.median([t[1] for t in times[m]]) for m in modes])
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
    left.barh(modes, wall, color="#bbbbbb", label="whole command")
    left.barh(modes, first, color="#0072B2", label="until the first run starts")
    left.set_xlabel("seconds (median over rounds)")
    left.invert_yaxis()
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    right.barh(modes, wall[0] / wall, color="#009E73")
    right.axvline(1.7, color="black", linestyle="--", linewidth=1, label="goal 1.7x")
    right.set_xlim(0, max(2.0, 1.1 * float((wall[0] / wall).max())))
    right.set_xlabel("speed-up over sequential")
    right.invert_yaxis()
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)


def summary(times: dict[str, list[tuple]]) -> str:
    """Per mode: median wall time, median speed-up over the rounds' sequential runs (and its range), median
    time to the first run; and the load averages the rounds started at."""
    seq = [t[0] for t in times["sequential"]]
    lines = [f"Medians over {len(seq)} interleaved round(s):"]
    for mode, rounds in times.items():
        ratios = [s / t[0] for s, t in zip(seq, rounds, strict=True)]
        first = statistics.median(t[1] for t in rounds)
        lines.append(
            f"- {mode}: {statistics.median(t[0] for t in rounds):.1f} s, speed-up {statistics.median(ratios):.2f}x "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x), first run starts after {first:.1f} s"
        )
    loads = [t[2] for rounds in times.values() for t in rounds]
    lines.append(f"- load average (1 min) at the starts: {min(loads):.2f}-{max(loads):.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--ray", action="store_true", help="also a local Ray instance running --workers runs at once")
    parser.add_argument("--figure", type=Path, help="also draw the medians into this PNG")
    args = parser.parse_args()
    modes = [("sequential", ()), (f"--workers {args.workers}", ("--workers", str(args.workers)))]
    if args.ray:  # N runs at once: N CPUs for the instance, 1 CPU per run
        cpus = max(1, (os.cpu_count() or 1) // args.workers)
        modes.append((f"ray, {args.workers} at once", ("--executor", "ray", "--resources", f"cpus={cpus}")))
    times = measure(args, modes)
    seq = [t[0] for t in times["sequential"]]
    print(f"4 runs x {args.epochs} epochs, 1 torch thread per run, {os.cpu_count()} CPUs, {args.rounds} round(s)\n")
    print("| mode | round | wall s (whole command) | speed-up | first run starts after s | load avg at start |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, rounds in times.items():
        for i, (seconds, first, load) in enumerate(rounds):
            print(f"| {mode} | {i + 1} | {seconds:.1f} | {seq[i] / seconds:.2f}x | {first:.1f} | {load:.2f} |")
    print()
    print(summary(times))
    if args.figure:
        title = f"--workers {args.workers} vs sequential: 4 runs x {args.epochs} epochs, {os.cpu_count()} CPUs"
        plot(times, args.figure, title)


if __name__ == "__main__":
    main()
