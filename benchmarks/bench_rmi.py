"""RMI loss cost on CPU: ours vs an official-style implementation vs cross-entropy.

Run: ``.venv/bin/python benchmarks/bench_rmi.py [--repeats N] [--threads 2]``

Setting (issue 3): forward + backward, B=4, C=21, 224x224, random logits and labels with a
block of 255s, radius 3, λ = 0.5. Times are taken side by side in one process (the three
implementations interleaved, median and best of the repeats after a warm-up), so load from other
processes on a shared machine hits all of them alike. Peak extra memory is the growth of the
peak RSS (``VmHWM``) over one forward + backward, each in a fresh subprocess. The last
setting ("VOC-like labels": 3 classes per image) shows the skip of absent classes.

"official-style" is our own re-implementation of the approach of the official code
(github.com/ZJULearning/RMI): stack the R² shifted copies, convert to float64, centre, matmul,
explicit inverse; written from methods.md §2, not copied.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from studybench.bench import load
from studybench.losses.rmi import region_mutual_information

peak_rss_kib = load("memory").peak_rss_kib

SETTINGS = {  # name -> (pool, factor, label kind)
    "avg 4/4": ("avg", 4, "random"),
    "max 4/4": ("max", 4, "random"),
    "nearest 4": ("nearest", 4, "random"),
    "none (factor 1)": ("avg", 1, "random"),
    "none, VOC-like labels": ("avg", 1, "blocky"),
}
IMPLS = ("ce", "ours", "official-style")
B, C, SIZE, RADIUS = 4, 21, 224, 3


def official_style_rmi(logits, target, radius=3, pool="avg", factor=4, lam=0.5):
    """The official algorithm, the memory-hungry way (our re-implementation, for comparison).

    Same operations and tensor layouts as the official ``forward_sigmoid`` / ``rmi_lower_bound``:
    a one-hot [B, H, W, C] tensor, a contiguous pixel-major copy of the logits for the weighted
    BCE, the one-hot pooled through a permuted (channels-last) view, R² stacked copies in float64.
    """
    classes = logits.shape[1]
    mask = target < classes
    onehot = F.one_hot(target * mask, classes).float() * mask.float().unsqueeze(3)  # [B, H, W, C]
    pixel_logits = logits.permute(0, 2, 3, 1).contiguous().view(-1, classes)
    weight = mask.float().view(-1, 1)
    bce_sum = F.binary_cross_entropy_with_logits(pixel_logits, onehot.view(-1, classes), weight=weight, reduction="sum")
    bce = bce_sum / (weight.sum() + 1.0)
    probs = logits.sigmoid() * mask.float().unsqueeze(1) + 1e-6
    labels = onehot.permute(0, 3, 1, 2)
    if factor > 1:
        if pool == "max":
            labels, probs = (F.max_pool2d(x, factor, factor, factor // 2) for x in (labels, probs))
        elif pool == "avg":
            labels, probs = (F.avg_pool2d(x, factor, factor, factor // 2) for x in (labels, probs))
        else:
            size = (labels.shape[2] // factor, labels.shape[3] // factor)
            labels = F.interpolate(labels, size=size, mode="nearest")
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=True)
    batch, h, w = labels.shape[0], labels.shape[2] - radius + 1, labels.shape[3] - radius + 1
    d = radius * radius
    offsets = [(dy, dx) for dy in range(radius) for dx in range(radius)]
    la = torch.stack([labels[:, :, dy : dy + h, dx : dx + w] for dy, dx in offsets], 2)
    pr = torch.stack([probs[:, :, dy : dy + h, dx : dx + w] for dy, dx in offsets], 2)
    la = la.view(batch, classes, d, -1).double()
    pr = pr.view(batch, classes, d, -1).double()
    eye = torch.eye(d).unsqueeze(0).unsqueeze(0)
    la = la - la.mean(dim=3, keepdim=True)
    pr = pr - pr.mean(dim=3, keepdim=True)
    la_cov = torch.matmul(la, la.transpose(2, 3))
    pr_cov = torch.matmul(pr, pr.transpose(2, 3))
    pr_cov_inv = torch.inverse(pr_cov + eye.type_as(pr_cov) * 5e-4)
    la_pr_cov = torch.matmul(la, pr.transpose(2, 3))
    approx = la_cov - torch.matmul(la_pr_cov.matmul(pr_cov_inv), la_pr_cov.transpose(-2, -1))
    chol = torch.linalg.cholesky(approx + eye.type_as(approx) * 5e-4)
    r = 0.5 * 2.0 * torch.sum(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1) + 1e-8), dim=-1)
    rmi = (r.view(-1, classes).mean(dim=0).float() / float(d)).sum()
    return lam * bce + (1 - lam) * rmi


def make_inputs(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, SIZE, SIZE, generator=g) * 3
    if kind == "random":
        target = torch.randint(0, C, (B, SIZE, SIZE), generator=g)
    else:  # a few classes per image in 16x16 blocks, like VOC masks (background + 1-3 objects)
        present = torch.stack([torch.randperm(C, generator=g)[:3] for _ in range(B)])
        blocks = torch.randint(0, 3, (B, SIZE // 16, SIZE // 16), generator=g)
        target = present.gather(1, blocks.flatten(1)).view(B, SIZE // 16, SIZE // 16)
        target = target.repeat_interleave(16, 1).repeat_interleave(16, 2)
    target[:, :20, :30] = 255
    return logits, target


def run_once(impl: str, setting: str, logits: torch.Tensor, target: torch.Tensor):
    pool, factor, _ = SETTINGS[setting]
    x = logits.detach().requires_grad_(True)
    if impl == "ce":
        value = F.cross_entropy(x, target, ignore_index=255)
    elif impl == "ours":
        value = region_mutual_information(x, target, RADIUS, pool, factor)[0]
    else:
        value = official_style_rmi(x, target, RADIUS, pool, factor)
    value.backward()
    return value.detach(), x.grad


def peak_extra_mib(impl: str, setting: str) -> tuple[float, float]:
    """Peak RSS growth over one forward + backward, and the process's peak RSS (MiB), in this process."""
    logits, target = make_inputs(SETTINGS[setting][2])
    # load kernels and thread pools before measuring
    run_once(impl, setting, logits[:1, :, :64, :64].contiguous(), target[:1, :64, :64].contiguous())
    before = peak_rss_kib()
    run_once(impl, setting, logits, target)
    after = peak_rss_kib()
    return (after - before) / 1024, after / 1024


def measure_in_subprocess(impl: str, setting: str, threads: int) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--memory", impl, setting, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    extra, total = out.strip().splitlines()[-1].split()
    return float(extra), float(total)


def time_setting(setting: str, repeats: int):
    logits, target = make_inputs(SETTINGS[setting][2])
    times = {impl: [] for impl in IMPLS}
    values, grads = {}, {}
    for rep in range(repeats + 1):  # the first round is the warm-up
        for impl in IMPLS:
            start = time.perf_counter()
            value, grad = run_once(impl, setting, logits, target)
            elapsed = time.perf_counter() - start
            if rep:
                times[impl].append(elapsed)
            values[impl], grads[impl] = value, grad
    ours, ref = values["ours"], values["official-style"]
    rel_value = abs(float(ours) - float(ref)) / abs(float(ref))
    rel_grad = float((grads["ours"] - grads["official-style"]).abs().max() / grads["official-style"].abs().max())
    return times, rel_value, rel_grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed repeats per setting (factor 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--memory", nargs=2, metavar=("IMPL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory:
        print(*peak_extra_mib(*args.memory))
        return
    print(f"torch {torch.__version__}, {args.threads} threads, B={B} C={C} {SIZE}x{SIZE} R={RADIUS}; forward+backward")
    header = (
        "| setting | impl | median s | best s | ratio (median) | ratio (best) | peak extra MiB | mem ratio "
        "| peak RSS MiB | max rel. diff value / grad |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for setting in args.settings:
        repeats = args.repeats if SETTINGS[setting][1] > 1 else max(3, args.repeats // 3)
        times, rel_value, rel_grad = time_setting(setting, repeats)
        mem, rss = {}, {}
        for impl in IMPLS:
            mem[impl], rss[impl] = measure_in_subprocess(impl, setting, args.threads)
        med = {impl: statistics.median(t) for impl, t in times.items()}
        best = {impl: min(t) for impl, t in times.items()}
        for impl in IMPLS:
            diff = f"{rel_value:.1e} / {rel_grad:.1e}" if impl == "ours" else ("0 (itself)" if impl != "ce" else "-")
            print(
                f"| {setting} | {impl} | {med[impl]:.3f} | {best[impl]:.3f} "
                f"| {med[impl] / med['official-style']:.2f} | {best[impl] / best['official-style']:.2f} "
                f"| {mem[impl]:.0f} | {mem[impl] / max(mem['official-style'], 1e-9):.2f} | {rss[impl]:.0f} | {diff} |"
            )


if __name__ == "__main__":
    main()
