"""The benchmark grid and its execution: timing tables, sweeps, memory cells, harness, loaders.

``run_bench(plan, progress)`` measures everything a ``BenchPlan`` asks for and returns a
``BenchResult`` of plain rows; writing tables and figures is ``page``'s job.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cases import MODELS, LossCase, SchemeCase, Size, loss_step, scheme_step
from .cells import cell_spec, measure_cells
from .harness import HarnessResult, measure_harness
from .loaders import measure_loaders
from .timing import time_interleaved

DEFAULT_SIZES = ("2x21x128", "2x21x256", "2x21x512", "2x2x256", "2x19x256")
DEFAULT_MAIN = "2x21x256"
QUICK_SIZES = ("2x3x32", "2x3x64")
QUICK_MAIN = "2x3x64"
#: Where ``bench --quick`` writes by default: git-ignored, so a first look never overwrites the committed reports/bench/.
QUICK_OUT = Path("results/bench-quick")
SUPERVISED = {"name": "supervised"}


@dataclass
class BenchPlan:
    losses: list[LossCase]
    schemes: list[SchemeCase]
    sizes: list[Size]
    main: Size
    device: torch.device
    repeats: int = 3
    threads: int = 2
    memory: bool = True
    jobs: int = 2  # memory cells at once (fresh processes; not timed)
    radii: tuple[int, ...] = (1, 2, 3, 4, 5)
    kernels: tuple[int, ...] = (1, 3, 5, 7, 9)
    harness: dict[str, int] | None = field(
        default_factory=lambda: {"image_size": 64, "train_images": 32, "epochs": 1, "batch": 8, "rounds": 5}
    )
    loaders: dict[str, int] | None = field(default_factory=lambda: {"images": 16, "rounds": 2})
    quick: bool = False


def make_plan(
    losses: list[LossCase],
    schemes: list[SchemeCase],
    sizes: list[str] | None,
    device: str,
    quick: bool,
    repeats: int | None = None,
    threads: int = 2,
    skip: set[str] | None = None,
) -> BenchPlan:
    """A plan from CLI values; the first of ``sizes`` is the main size (the main table's)."""
    skip = skip or set()
    unknown = skip - {"memory", "harness", "loaders", "sweeps", "schemes"}
    if unknown:
        raise ValueError(f"--skip takes memory, harness, loaders, sweeps, schemes; got {', '.join(sorted(unknown))}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is available")
    if sizes:
        parsed = [Size.parse(s) for s in sizes]
        main = parsed[0]
    else:
        parsed = [Size.parse(s) for s in (QUICK_SIZES if quick else DEFAULT_SIZES)]
        main = Size.parse(QUICK_MAIN if quick else DEFAULT_MAIN)
    plan = BenchPlan(
        losses=losses,
        schemes=[] if "schemes" in skip else schemes,
        sizes=sorted(set(parsed), key=lambda s: (s.classes != main.classes, s.side, s.classes)),
        main=main,
        device=torch.device(device),
        repeats=repeats or (1 if quick else 3),
        threads=threads,
        memory="memory" not in skip,
        quick=quick,
    )
    if quick:  # under a minute on 2 CPU cores: timings, sweeps and loaders only
        plan.radii, plan.kernels = (1, 3), (3, 5)
        plan.loaders = {"images": 8, "rounds": 1}
        # a memory cell is a fresh process (~7 s of CPU each, 40 cells) and the harness trains 4 tiny
        # runs (~40 s): together minutes, so --quick leaves them to the full bench
        plan.memory, plan.harness = False, None
    if "sweeps" in skip:
        plan.radii, plan.kernels = (), ()
    if "harness" in skip:
        plan.harness = None
    if "loaders" in skip:
        plan.loaders = None
    return plan


@dataclass
class BenchResult:
    times: list[dict[str, Any]] = field(default_factory=list)  # size, case, kind, median_s, best_s, n
    memory: dict[tuple[str, str], float] = field(default_factory=dict)  # (case, size label) -> bytes
    memory_errors: dict[tuple[str, str], str] = field(default_factory=dict)
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # sweep, value, case
    harness: HarnessResult | None = None
    loaders: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data (``result.json`` of a report), so its page can be rebuilt without measuring again."""
        memory = [
            {"case": c, "size": s, "bytes": b, "error": self.memory_errors.get((c, s), "")}
            for (c, s), b in self.memory.items()
        ]
        harness = (
            None
            if self.harness is None
            else {"harness": self.harness.harness, "bare": self.harness.bare, "setting": self.harness.setting}
        )
        return {
            "times": self.times,
            "memory": memory,
            "sweeps": self.sweeps,
            "harness": harness,
            "loaders": self.loaders,
            "machine": self.machine,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        result = cls(times=data["times"], sweeps=data["sweeps"], loaders=data["loaders"], machine=data["machine"])
        for m in data["memory"]:
            result.memory[m["case"], m["size"]] = m["bytes"]
            if m["error"]:
                result.memory_errors[m["case"], m["size"]] = m["error"]
        if data["harness"]:
            result.harness = HarnessResult(**data["harness"])
        return result


def sweep_cases(plan: BenchPlan) -> list[tuple[str, int, LossCase]]:
    """(sweep, value, case): RMI region size R at the paper's pooling, LAD kernel at k = 3."""
    rmi = {"pool": "avg", "factor": 4, "bce_weight": 0.5}
    cases = [("rmi-radius", r, LossCase(f"rmi R={r}", "rmi", {**rmi, "radius": r})) for r in plan.radii]
    cases += [("lad-kernel", k, LossCase(f"lad kernel={k}", "lad", {"kernel": k, "k": 3})) for k in plan.kernels]
    return cases


def count_work(plan: BenchPlan) -> int:
    rounds = plan.repeats + 1
    work = 0
    for size in plan.sizes:
        work += rounds * (len(plan.losses) + 1 + (size == plan.main) * (1 + len(plan.schemes)))
    work += rounds * (len(sweep_cases(plan)) + 1) if sweep_cases(plan) else 0
    work += len(memory_cells(plan)) if plan.memory else 0
    work += (plan.harness["rounds"] + 1) if plan.harness else 0
    work += 7 * plan.loaders["rounds"] if plan.loaders else 0
    return work


def memory_cells(plan: BenchPlan) -> list[tuple[str, str, dict[str, Any]]]:
    """(case, size label, cell spec) of every memory cell."""
    cells = []
    for size in plan.sizes:
        for case in plan.losses:
            cells.append(
                (case.name, size.label, cell_spec("loss", size, plan.threads, loss=case.loss, params=case.params))
            )
    main = plan.main
    if plan.schemes:
        cells.append(("unet-r18", main.label, cell_spec("scheme", main, plan.threads, scheme=SUPERVISED)))
        for case in plan.schemes:
            cells.append((case.name, main.label, cell_spec("scheme", main, plan.threads, scheme=case.scheme)))
    for _, _, case in sweep_cases(plan):
        cells.append((case.name, main.label, cell_spec("loss", main, plan.threads, loss=case.loss, params=case.params)))
    return cells


def run_bench(plan: BenchPlan, advance: Callable[[str], None] = lambda what: None) -> BenchResult:
    torch.set_num_threads(plan.threads)
    result = BenchResult(machine=machine_info(plan))
    load_before = os.getloadavg()
    device = plan.device
    for size in plan.sizes:
        steps: dict[str, Callable[[], object]] = {c.name: loss_step(c, size, device) for c in plan.losses}
        steps["unet-r18"] = scheme_step(SUPERVISED, size, device, *MODELS["unet-r18"])
        if size == plan.main:
            steps["deeplabv3-r50"] = scheme_step(SUPERVISED, size, device, *MODELS["deeplabv3-r50"])
            for case in plan.schemes:
                steps[case.name] = scheme_step(case.scheme, size, device, *MODELS["unet-r18"])
        timings = time_interleaved(
            steps, device, plan.repeats, done=lambda name, s=size: advance(f"time {s.label} {name}")
        )
        kinds = {c.name: "scheme" for c in plan.schemes} | {"unet-r18": "model", "deeplabv3-r50": "model"}
        for name, t in timings.items():
            row = {"size": size.label, "batch": size.batch, "classes": size.classes, "side": size.side, "case": name}
            result.times.append(
                row | {"kind": kinds.get(name, "loss"), "median_s": t.median, "best_s": t.best, "n": len(t.samples)}
            )
        del steps
    sweeps = sweep_cases(plan)
    if sweeps:
        ce = next(c for c in plan.losses if c.name == "ce")
        steps = {"ce": loss_step(ce, plan.main, device)} | {
            c.name: loss_step(c, plan.main, device) for _, _, c in sweeps
        }
        timings = time_interleaved(steps, device, plan.repeats, done=lambda name: advance(f"sweep {name}"))
        for sweep, value, case in sweeps:
            t = timings[case.name]
            result.sweeps.append(
                {
                    "sweep": sweep,
                    "value": value,
                    "case": case.name,
                    "size": plan.main.label,
                    "median_s": t.median,
                    "best_s": t.best,
                    "ce_median_s": timings["ce"].median,
                }
            )
    if plan.memory:
        cells = memory_cells(plan)
        measured = measure_cells([spec for _, _, spec in cells], device, plan.jobs, done=lambda: advance("memory"))
        for (case, label, _), (extra, error) in zip(cells, measured):
            result.memory[case, label] = extra
            if error:
                result.memory_errors[case, label] = error
    if plan.harness:
        h = dict(plan.harness)
        rounds = h.pop("rounds")
        result.harness = measure_harness(
            rounds, **h, threads=plan.threads, device=device.type, done=lambda: advance("harness")
        )
    if plan.loaders:
        with tempfile.TemporaryDirectory(prefix="studybench_bench_") as tmp:
            result.loaders = measure_loaders(
                Path(tmp), plan.loaders["images"], plan.loaders["rounds"], done=lambda: advance("loaders")
            )
    result.machine["load_average_before"] = [round(x, 2) for x in load_before]
    result.machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def machine_info(plan: BenchPlan) -> dict[str, Any]:
    """CPU, threads, GPU, library versions, git commit and the plan's grid."""
    import numpy
    import segmentation_models_pytorch as smp

    from studybench import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    gpu = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": plan.threads,
        "device": str(plan.device),
        "gpu": gpu or "none (CPU run)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": numpy.__version__,
        "studybench": __version__,
        "git_commit": commit,
        "os": platform.platform(),
        "sizes": [s.label for s in plan.sizes],
        "main_size": plan.main.label,
        "repeats": plan.repeats,
        "quick": plan.quick,
    }
