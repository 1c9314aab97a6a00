"""Parallel speed-up of ``studybench run --workers 2`` against sequential, end to end.

A 4-run CPU grid (two losses x two seeds, one torch thread per run) is run twice by the real
CLI into fresh stores: once sequentially, once with two workers (which includes starting the
local MLflow server and spawning the workers). Prints the wall time of each command, the
speed-up (goal >= 1.7x on 2 cores) and the load average, since other processes on the
machine distort it.

    .venv/bin/python benchmarks/bench_parallel.py [--epochs 24] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
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


def timed_run(folder: Path, *extra: str) -> float:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "studybench.cli", "run", "study.yaml", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for mode, extra in (("sequential", ()), (f"--workers {args.workers}", ("--workers", str(args.workers)))):
            folder = Path(tmp) / mode.replace(" ", "").replace("-", "")
            folder.mkdir()
            (folder / "study.yaml").write_text(STUDY.format(epochs=args.epochs))
            load = os.getloadavg()[0]
            times[mode] = (timed_run(folder, *extra), load)
    seq = times["sequential"][0]
    print(f"4 runs x {args.epochs} epochs, 1 torch thread per run, {os.cpu_count()} CPUs\n")
    print("| mode | wall s (whole command) | speed-up | load avg at start |")
    print("|---|---:|---:|---:|")
    for mode, (seconds, load) in times.items():
        print(f"| {mode} | {seconds:.1f} | {seq / seconds:.2f}x | {load:.2f} |")


if __name__ == "__main__":
    main()
