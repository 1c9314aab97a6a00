"""Cost of the LAD loss next to CE and a U-Net-resnet18 training step (CPU).

Times forward + backward of each loss on logits [B, C, H, W] (default 8 × 21 × 224²) and one
U-Net-resnet18 SGD step on the same batch, all in one process and interleaved round by round,
so that load from other programs on a shared machine hits every case alike; medians are
reported. LAD is timed as it runs on CPU by default (compiled loops) and as the tensor-op
version that GPUs run. Peak extra memory of each loss is measured in a fresh subprocess per case: the
kernel's peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs just before the call,
with glibc told to return large blocks to the OS at once (MALLOC_MMAP_THRESHOLD_), and the
resident size before the call (logits and target already allocated) is subtracted.

    .venv/bin/python benchmarks/bench_lad.py [--threads 2] [--repeats 7] [--batch 8] [--size 224]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from studybench.bench import load
from studybench.losses import build_loss
from studybench.losses.lad import locally_adaptive_loss

make_batch = load("cases").make_batch
reset_peak_rss, status_kib = load("memory").reset_peak_rss, load("memory").status_kib

CASES = {
    "ce": {"name": "ce"},
    "lad kernel 3": {"name": "lad", "kernel": 3, "k": 3},
    "lad kernel 5": {"name": "lad", "kernel": 5, "k": 3},
    "lad kernel 7": {"name": "lad", "kernel": 7, "k": 3},
    # the tensor-op version (what GPUs run), for comparison with the compiled CPU loops
    "lad kernel 3, tensor ops": {"name": "lad", "kernel": 3, "k": 3, "backend": "tensor"},
    "lad kernel 5, tensor ops": {"name": "lad", "kernel": 5, "k": 3, "backend": "tensor"},
    "lad kernel 7, tensor ops": {"name": "lad", "kernel": 7, "k": 3, "backend": "tensor"},
}


def make_loss(spec: dict) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    params = {k: v for k, v in spec.items() if k not in ("name", "backend")}
    if "backend" in spec:  # not a loss parameter: call the function
        return functools.partial(locally_adaptive_loss, backend=spec["backend"], **params)
    return build_loss(spec["name"], **params)


def loss_step(loss: Callable, logits: torch.Tensor, target: torch.Tensor) -> None:
    z = logits.detach().requires_grad_(True)
    loss(z, target).backward()


def time_all(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per case."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    logits, target = make_batch(args.batch, args.classes, args.size)
    images = torch.randn(args.batch, 3, args.size, args.size)
    model = smp.Unet("resnet18", encoder_weights=None, classes=args.classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ce = build_loss("ce")

    def unet_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        ce(model(images), target).backward()
        optimizer.step()

    steps = {"unet-resnet18 step": unet_step}
    for label, spec in CASES.items():
        steps[label] = lambda loss=make_loss(spec): loss_step(loss, logits, target)
    times: dict[str, list[float]] = {label: [] for label in steps}
    for fn in steps.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for label, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: (statistics.median(values), min(values)) for label, values in times.items()}


def _peak_rss_child(label: str, args: argparse.Namespace) -> None:
    """Runs in a fresh process: prints the peak extra RSS (bytes) of one forward + backward."""
    loss = make_loss(CASES[label])
    logits, target = make_batch(args.batch, args.classes, args.size)
    loss_step(loss, logits[:1, :, :32, :32].contiguous(), target[:1, :32, :32].contiguous())  # lazy init
    reset_peak_rss()
    before = status_kib("VmRSS")
    loss_step(loss, logits, target)
    print(json.dumps({"extra_bytes": (status_kib("VmHWM") - before) * 1024}))


def peak_memory(label: str, args: argparse.Namespace) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--child", label, "--threads", str(args.threads)]
    cmd += ["--batch", str(args.batch), "--classes", str(args.classes), "--size", str(args.size)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["extra_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        _peak_rss_child(args.child, args)
        return
    load_before = os.getloadavg()[0]
    times = time_all(args)
    load_after = os.getloadavg()[0]
    logits_bytes = args.batch * args.classes * args.size * args.size * 4
    step, step_min = times["unet-resnet18 step"]
    ce, ce_min = times["ce"]
    print(
        f"B={args.batch}, C={args.classes}, {args.size}², float32, {args.threads} CPU threads; median (min) of "
        f"{args.repeats} interleaved rounds; logits = {logits_bytes / 2**20:.1f} MiB; "
        f"1-min load average {load_before:.1f} before, {load_after:.1f} after (shared machine)\n"
    )
    print("| case | fwd+bwd ms | vs CE | share of U-Net step | peak extra MiB | × logits |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| U-Net-resnet18 training step | {step * 1e3:.0f} ({step_min * 1e3:.0f}) | | 100 % | | |")
    for label in CASES:
        med, low = times[label]
        extra = peak_memory(label, args)
        mem = "n/a | n/a" if extra is None else f"{extra / 2**20:.0f} | {extra / logits_bytes:.2f}"
        print(
            f"| {label} | {med * 1e3:.0f} ({low * 1e3:.0f}) | {med / ce:.2f}× ({low / ce_min:.2f}×) | "
            f"{100 * med / step:.1f} % ({100 * low / step_min:.1f} %) | {mem} |"
        )


if __name__ == "__main__":
    main()
