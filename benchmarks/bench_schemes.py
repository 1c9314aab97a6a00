"""Overhead of the training schemes: Self-Regulation configurations and deep mutual learning.

For a U-Net-resnet18 student (default smp decoder) on a CPU batch (default 4 × 3 × 128², C = 19),
each scheme is built from the same seed and measured in one process:
- params: of the evaluated network, and of everything trained (exit heads, peer);
- FLOPs per image: one whole ``train_step`` under ``FlopCounterMode`` (forward, backward,
  every network and head; divided by B), and one forward of the evaluated network in eval mode;
- time: the median of ``train_step`` and of an eval-mode forward, interleaved round by round
  over the schemes so that load from other programs on a shared machine hits every case alike.

    .venv/bin/python benchmarks/bench_schemes.py [--threads 2] [--repeats 5] [--batch 4] [--size 128] [--peer resnet50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from studybench.bench import load
from studybench.engine.measure import count_params

build_training_scheme = load("cases").build_training_scheme


def cases(peer_encoder: str) -> dict[str, dict]:
    sr = {"name": "self-regulation"}
    return {
        "supervised (CE)": {"name": "supervised"},
        "SR: MEA": {**sr, "mea": True, "sr_f": False, "sr_l": False},
        "SR: MEA + SR-F": {**sr, "mea": True, "sr_f": True, "sr_l": False},
        "SR: MEA + SR-L": {**sr, "mea": True, "sr_f": False, "sr_l": True},
        "SR: MEA + SR-F + SR-L": {**sr, "mea": True, "sr_f": True, "sr_l": True},
        f"DML (peer DeepLabV3-{peer_encoder})": {
            "name": "mutual",
            "peer": {"arch": "deeplabv3", "encoder": peer_encoder},
        },
    }


def trained_params(scheme) -> int:
    modules = list(scheme.networks.values()) + ([scheme.heads] if getattr(scheme, "heads", None) is not None else [])
    return count_params(*modules)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--peer", default="resnet50", help="encoder of the DML peer (DeepLabV3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    target = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=gen)
    target[:, :8] = 255
    schemes = {
        name: build_training_scheme(cfg, args.classes, torch.device("cpu"), steps=10 * (args.repeats + 2))
        for name, cfg in cases(args.peer).items()
    }

    rows = {}
    for name, scheme in schemes.items():
        with FlopCounterMode(display=False) as train_flops:
            scheme.train_step(images, target)  # also the warm-up step
        net = scheme.networks[scheme.headline]
        net.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as infer_flops:
            net(images)
        net.train()
        rows[name] = {
            "params_eval": count_params(net) / 1e6,
            "params_train": trained_params(scheme) / 1e6,
            "train_gflops": train_flops.get_total_flops() / args.batch / 1e9,
            "infer_gflops": infer_flops.get_total_flops() / args.batch / 1e9,
            "step": [],
            "infer": [],
        }

    for _ in range(args.repeats):  # interleaved: every scheme once per round
        for name, scheme in schemes.items():
            rows[name]["step"].append(timed(lambda s=scheme: s.train_step(images, target)))
            net = scheme.networks[scheme.headline]
            net.eval()
            with torch.no_grad():
                rows[name]["infer"].append(timed(lambda n=net: n(images)))
            net.train()

    base = rows["supervised (CE)"]
    base_step, base_infer = statistics.median(base["step"]), statistics.median(base["infer"])
    print(
        f"\nU-Net-resnet18 student, B={args.batch}, {args.size}², C={args.classes}, CPU, {args.threads} threads, "
        f"median of {args.repeats} interleaved rounds (shared machine: compare ratios within this table)\n"
    )
    print(
        "| scheme | params eval (M) | params trained (M) | train GFLOPs/img | infer GFLOPs/img "
        "| step (ms) | step × | infer (ms/img) | infer × |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in rows.items():
        step, infer = statistics.median(r["step"]), statistics.median(r["infer"])
        print(
            f"| {name} | {r['params_eval']:.2f} | {r['params_train']:.2f} | {r['train_gflops']:.2f} "
            f"| {r['infer_gflops']:.2f} | {1000 * step:.0f} | {step / base_step:.2f} "
            f"| {1000 * infer / args.batch:.1f} | {infer / base_infer:.2f} |"
        )


if __name__ == "__main__":
    main()
