"""Execute one RunSpec end to end: data -> scheme (model, loss, optimiser) -> epochs -> metrics.

Reads top to bottom: ``execute`` sets the run's threads and switches (``settings``: restored
when the run ends) and calls ``fit``, which builds the data and a ``Run`` (the scheme, and the
state of a checkpoint if there is one), then for each epoch calls ``Run.train_epoch``
(``train_one_epoch``, and every ``train.eval_every`` epochs and after the last ``Run.evaluate``
on every network of the scheme); ``Run.finish`` logs the final metrics, costs and artifacts. The trainer never imports the study
config or the grid, and it writes only through the ``Recorder`` it is given (MLflow in
practice), so it can run in any process or on any node. With ``checkpoints`` it saves its state
after every epoch and continues from there when it finds a checkpoint of its run key (see
``checkpoint``); ``faults.inject`` marks the points where crash tests kill it.

Built for GPUs: in steady state a training step makes no host sync. The losses of the steps are
summed on the device and read every ``train.log_every`` steps and at the end of each epoch
(``LossMeter``), where a non-finite value fails the run naming the steps it appeared in; the
step and loss timers record CUDA events read at those moments (``measure.Timer``); batches come
from pinned memory with ``non_blocking`` copies; the confusion matrix is accumulated on the
device. Device decisions (AMP, pinning, memory format, compile, TF32, cuDNN autotuning) are
made in ``device``.

The protocol that makes methods comparable (design.md, "Protocol") is kept here and in the
modules it calls: every source of randomness has its own stream derived from the seed
(``rng``: data order and per-sample augmentation via ``data.sampler``, initial weights per
network role, the method's own draws on the global generators), so one seed gives one data
order and one augmentation per sample whatever the method and the number of loader workers;
predictions are scored against the native label maps (``evaluation``); losses are computed in
float32 (``schemes.base``); ``train.deterministic`` sets PyTorch's reproducibility switches and
records them as tags.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from studybench import IGNORE_INDEX
from studybench.data import SegDataset, build_dataset
from studybench.data.loaders import train_loader_for, val_loader_for
from studybench.engine import faults
from studybench.engine.checkpoint import Checkpoints, Fallback, rng_state, set_rng_state
from studybench.engine.device import Placement, default_workers, resolve_device
from studybench.engine.evaluation import SIZE_MULTIPLE, Evaluation, evaluate, log_image_counts, matrix_csv, samples_npz
from studybench.engine.evaluation import samples_npz as _samples_npz  # noqa: F401 - the name tests and tools use
from studybench.engine.load import load_metrics
from studybench.engine.measure import PeakMemory, Timer, count_params
from studybench.engine.rng import seed_method_stream
from studybench.engine.run_images import log_run_images
from studybench.engine.settings import run_settings
from studybench.schemes import NonFiniteLossError, Scheme, StepStats, build_scheme
from studybench.store.layout import (
    ARTIFACT_CONFUSION,
    ARTIFACT_CONFUSION_PNG,
    ARTIFACT_SAMPLES,
    ARTIFACT_SAMPLES_PNG,
    CURVE_EPOCH_TIME,
    CURVE_LR,
    CURVE_TRAIN_PREFIX,
    CURVE_VAL_PREFIX,
    EVAL_CROP,
    EVAL_NATIVE,
    METRIC_EVAL,
    METRIC_EXTRA_MEM,
    METRIC_INFER,
    METRIC_IOU_PREFIX,
    METRIC_LOAD_END,
    METRIC_LOAD_START,
    METRIC_LOSS,
    METRIC_LOSS_IQR,
    METRIC_LOSS_SHARE,
    METRIC_PARAMS,
    METRIC_PEAK_MEM,
    METRIC_STEP,
    METRIC_STEP_IQR,
    METRIC_STEPS,
    METRIC_TRAIN,
    METRIC_WALL,
    TAG_EVAL_LABELS,
    TAG_RESUMED_EPOCH,
    TAG_RESUMED_RUN,
)
from studybench.study.spec import RunSpec

__all__ = ["SIZE_MULTIPLE", "evaluate", "execute", "fit", "resolve_device", "train_one_epoch"]


class Recorder(Protocol):
    """Where a run's results go (implemented by ``tracking.RunLogger``)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_bytes(self, data: bytes, artifact_file: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...


class Progress(Protocol):
    """Progress display hooks (the CLI implements them with rich).

    ``step_done`` comes every ``train.log_every`` steps and at the end of an epoch, with the
    number of steps done since the last call and their mean loss (reading the loss every step
    would stop the host every step).
    """

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step_done(self, loss: float, steps: int = 1) -> None: ...
    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class RunResult:
    metrics: dict[str, float]  # final headline metrics and costs (what the summary shows)
    per_class_iou: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainState:
    """Where a run stands after an epoch: what a checkpoint needs besides weights and RNGs."""

    epoch: int = 0  # epochs completed
    step: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0  # wall time of earlier (interrupted) processes
    peak_mb: float = 0.0
    step_samples: list[float] = field(default_factory=list)
    loss_samples: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)  # the curves of each epoch
    evaluations: int = 0  # passes over the evaluation split (for the inference time per image)


@dataclass
class RunData:
    """The run's datasets and loaders, and how many steps and epochs it trains."""

    train_set: SegDataset
    val_set: SegDataset
    train_loader: DataLoader
    val_loader: DataLoader
    total_steps: int
    epochs: int


def execute(
    spec: RunSpec, recorder: Recorder, progress: Progress | None = None, checkpoints: Checkpoints | None = None
) -> RunResult:
    """Train and evaluate ``spec``; log curves, final metrics, costs and artifacts to ``recorder``.

    With ``checkpoints``, the state is saved after every epoch and a run that finds a
    checkpoint of its key continues from it (re-logging the earlier epochs' curves).
    """
    train = spec.config.train
    with run_settings(train) as switches:  # threads and switches, given back when the run ends
        eval_labels = EVAL_CROP if spec.config.data.eval_on == "crop" else EVAL_NATIVE
        recorder.set_tags({**switches, TAG_EVAL_LABELS: eval_labels})
        return fit(spec, recorder, progress, checkpoints if train.checkpoint else None)


def fit(spec: RunSpec, recorder: Recorder, progress: Progress | None, checkpoints: Checkpoints | None) -> RunResult:
    """Build the run, train it epoch by epoch (evaluating when due), then log what it measured."""
    clock = time.perf_counter()
    recorder.log_metrics(load_metrics(METRIC_LOAD_START))  # a resumed run records its own start
    placement = Placement.for_run(spec.config.train, resolve_device(spec.config.train.device))
    data = build_data(spec, placement)
    with PeakMemory(placement.device) as peak:
        run = Run(spec, recorder, progress, checkpoints, data, peak, clock)  # the scheme; a checkpoint's state
        evaluation: dict[str, Evaluation] | None = None
        for epoch in range(run.state.epoch, data.epochs):
            evaluation = run.train_epoch(epoch)
        if evaluation is None:  # resumed after the last epoch: its evaluation is all that is left
            evaluation = run.evaluate(data.epochs - 1)
        run.note_peak()
    run.state.wall_s += time.perf_counter() - run.clock
    return run.finish(evaluation)


class Run:
    """One run in training: what it was given, the scheme it built, and where it stands (``state``).

    Built in the order the protocol needs (``rng``): the scheme's networks from their own
    streams, then the method's stream, then a checkpoint's state if there is one.
    """

    def __init__(
        self,
        spec: RunSpec,
        recorder: Recorder,
        progress: Progress | None,
        checkpoints: Checkpoints | None,
        data: RunData,
        peak: PeakMemory,
        clock: float,
    ) -> None:
        self.spec, self.recorder, self.progress, self.checkpoints = spec, recorder, progress, checkpoints
        self.data, self.peak, self.clock = data, peak, clock  # clock: when this process's share of wall_s began
        device = peak.device
        seeds = spec.stream_seeds  # each source's seed (spec.SOURCES): all spec.seed unless given by source
        self.scheme = build_scheme(spec.config, data.train_set.num_classes, device, data.total_steps, seeds["init"])
        seed_method_stream(seeds["method"])  # after the networks are built: only the method draws from it
        self.state = self._resume()
        self.step_timer = Timer(device)
        self.step_timer.samples, self.scheme.loss_timer.samples = self.state.step_samples, self.state.loss_samples

    def train_epoch(self, epoch: int) -> dict[str, Evaluation] | None:
        """Train one epoch, evaluate if due, log its curves, checkpoint; the evaluation if there was one."""
        start, data, state = time.perf_counter(), self.data, self.state
        if self.progress:
            self.progress.epoch_started(epoch, data.epochs, min(len(data.train_loader), data.total_steps - state.step))
        means = train_one_epoch(
            self.spec, self.scheme, data.train_loader, epoch, state, data.total_steps, self.step_timer, self.progress
        )
        state.train_s += time.perf_counter() - start
        due = (epoch + 1) % self.spec.config.train.eval_every == 0 or epoch == data.epochs - 1
        evaluation = self.evaluate(epoch) if due else None
        curves = epoch_curves(self.scheme, means, evaluation, time.perf_counter() - start)
        self.recorder.log_metrics(curves, step=epoch)
        state.history.append(curves)
        if self.progress:
            self.progress.epoch_done(epoch, curves)
        faults.inject("log", epoch, self.spec.name)
        state.epoch = epoch + 1
        if self.checkpoints:
            self.save()
        return evaluation

    def evaluate(self, epoch: int) -> dict[str, Evaluation]:
        """``evaluation.evaluate`` every network of the scheme, by role; adds the time to ``state``."""
        faults.inject("eval", epoch, self.spec.name)
        start, scheme = time.perf_counter(), self.scheme
        fmt, classes, loader = scheme.placement.memory_format, self.data.train_set.num_classes, self.data.val_loader
        results = {role: evaluate(net, loader, classes, scheme.device, fmt) for role, net in scheme.networks.items()}
        self.state.eval_s += time.perf_counter() - start
        self.state.evaluations += 1
        return results

    def note_peak(self) -> None:
        self.state.peak_mb = max(self.state.peak_mb, self.peak.current())

    def save(self) -> None:
        """Checkpoint the run after an epoch (its wall time so far included)."""
        self.note_peak()
        now = time.perf_counter()
        self.state.wall_s, self.clock = self.state.wall_s + now - self.clock, now
        payload = {"epoch": self.state.epoch, "run_id": getattr(self.recorder, "run_id", None)}
        payload.update(state=asdict(self.state), scheme=self.scheme.state_dict(), rng=rng_state())
        self.checkpoints.save(self.spec, payload)

    def finish(self, evaluation: dict[str, Evaluation]) -> RunResult:
        """Log the final metrics (per network), the confusion matrices, sample predictions and costs."""
        final: dict[str, float] = {}
        per_class: dict[str, float] = {}
        names, scheme = self.data.val_set.class_names, self.scheme
        for role, (metrics, matrix, samples) in evaluation.items():
            prefix = "" if role == scheme.headline else f"{role}/"
            final.update({f"{prefix}{k}": v for k, v in metrics.as_dict().items()})
            final.update(
                {f"{prefix}{METRIC_IOU_PREFIX}{c}": v for c, v in zip(names, metrics.iou) if not math.isnan(v)}
            )
            if role == scheme.headline:
                per_class = dict(zip(names, metrics.iou))
            self.recorder.log_text(matrix_csv(matrix, names), f"{prefix}{ARTIFACT_CONFUSION}")
            self.recorder.log_bytes(samples_npz(samples, self.data.val_set), f"{prefix}{ARTIFACT_SAMPLES}")
            log_image_counts(self.recorder, matrix, self.data.val_set, prefix)  # the report's bootstrap over images
            pngs = (f"{prefix}{ARTIFACT_SAMPLES_PNG}", f"{prefix}{ARTIFACT_CONFUSION_PNG}")
            log_run_images(self.recorder, samples, matrix.matrix.numpy(), names, self.data.val_set.palette, pngs)
        final.update(self.costs())
        self.recorder.log_metrics(final)
        faults.inject("final", None, self.spec.name)
        return RunResult(metrics=final, per_class_iou=per_class)

    def costs(self) -> dict[str, float]:
        """Time, memory and size of the run: medians of the timed steps and their interquartile range
        (``measure.Timer``), which the report compares; the wall clocks follow the machine's load."""
        state, scheme, step_timer = self.state, self.scheme, self.step_timer
        step_s, loss_s = step_timer.median, scheme.loss_timer.median
        images = max(1, state.evaluations * len(self.data.val_set) * len(scheme.networks))
        return {
            METRIC_WALL: state.wall_s,
            METRIC_TRAIN: state.train_s,
            METRIC_EVAL: state.eval_s,
            METRIC_STEP: step_s,
            METRIC_STEP_IQR: step_timer.iqr,
            METRIC_LOSS: loss_s * 1000,
            METRIC_LOSS_IQR: scheme.loss_timer.iqr * 1000,
            METRIC_LOSS_SHARE: loss_s / step_s if step_timer.samples else float("nan"),
            METRIC_PEAK_MEM: state.peak_mb,
            METRIC_EXTRA_MEM: state.peak_mb - self.peak.start_mb,  # above what the process held before the run
            METRIC_PARAMS: count_params(scheme.networks[scheme.headline]) / 1e6,
            METRIC_INFER: 1000 * state.eval_s / images,
            METRIC_STEPS: float(state.step),
            **load_metrics(METRIC_LOAD_END),
            **scheme.extra_costs(),
        }

    def _resume(self) -> TrainState:
        """Restore the run's checkpoint if there is one; re-log its curves into this MLflow run.

        Data order and augmentation are functions of (seed, epoch), so the epoch reached is all
        the loader needs; the global generators (the method's stream) are restored from the file.
        """
        payload = self.checkpoints.load(self.spec) if self.checkpoints else None
        if payload is None:
            return TrainState()
        before = Fallback(self.scheme)
        try:
            state = TrainState(**payload["state"])
            self.scheme.load_state_dict(payload["scheme"])
            set_rng_state(payload["rng"])
        except Exception as err:  # noqa: BLE001 - a checkpoint that does not fit this run: start over, not fail forever
            before.restore()
            self.checkpoints.set_aside(self.spec, f"it does not fit this run: {type(err).__name__}: {err}")
            return TrainState()
        for epoch, curves in enumerate(state.history):
            self.recorder.log_metrics(curves, step=epoch)
        self.recorder.set_tags({TAG_RESUMED_EPOCH: str(state.epoch), TAG_RESUMED_RUN: str(payload.get("run_id"))})
        return state


def build_data(spec: RunSpec, placement: Placement) -> RunData:
    """Datasets and loaders of the run (workers from the CPUs when ``data.num_workers`` is unset)."""
    cfg = spec.config
    train_set = build_dataset(cfg.data, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    workers = default_workers(cfg.data.num_workers, cfg.train.threads)
    pin = placement.pin_memory
    seeds = spec.stream_seeds  # data: the order (and workers); aug: each sample's augmentation
    train_loader = train_loader_for(train_set, cfg.train.batch_size, seeds["data"], workers, pin, seeds["aug"])
    val_batch = cfg.train.val_batch_size or cfg.train.batch_size
    val_loader = val_loader_for(val_set, val_batch, seeds["data"], workers, pin_memory=pin)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"training split has {len(train_set)} images, fewer than batch_size={cfg.train.batch_size}")
    total_steps = cfg.train.iterations or cfg.train.epochs * steps_per_epoch
    return RunData(train_set, val_set, train_loader, val_loader, total_steps, math.ceil(total_steps / steps_per_epoch))


def train_one_epoch(
    spec: RunSpec,
    scheme: Scheme,
    loader: DataLoader,
    epoch: int,
    state: TrainState,
    total_steps: int,
    step_timer: Timer,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` in the order of ``epoch`` (stopping at ``total_steps``); the mean
    loss and loss parts of its steps. The only host reads are the ``LossMeter``'s."""
    scheme.set_train(True)
    loader.sampler.set_epoch(epoch)  # the order and augmentations of this epoch, whatever came before
    placement = scheme.placement
    what = f"loss {spec.config.loss.name!r}"
    meter = LossMeter(spec.config.train.log_every, epoch, state.step, what, progress, (step_timer, scheme.loss_timer))
    for images, target in loader:
        if state.step >= total_steps:
            break
        images, target = pad_batch(placement.images(images), placement.labels(target))
        with step_timer:
            stats = scheme.train_step(placement.layout(images), target)
        state.step += 1
        meter.add(stats)
        if meter.steps == 1:
            faults.inject("train", epoch, spec.name)
    return meter.means()


class LossMeter:
    """Sums of the steps' loss and loss parts, kept on the device and read every ``every`` steps.

    Each step adds its values (one stack, one add, in float64: the sums equal the Python sums of
    the per-step floats the loop used to read). Each read is one copy to the host: it feeds the
    progress display, and a non-finite sum fails the run naming the steps since the last finite
    read, which contain the first non-finite step. The step timers' events are resolved then too
    (they are complete by then, so it costs no wait, and none piles up over a long epoch).
    """

    def __init__(
        self,
        every: int,
        epoch: int,
        first_step: int,
        what: str,
        progress: Progress | None,
        timers: tuple[Timer, ...] = (),
    ) -> None:
        self.every, self.epoch, self.first_step, self.what, self.progress = every, epoch, first_step, what, progress
        self.timers = timers
        self.names: tuple[str, ...] = ()
        self.sums: torch.Tensor | None = None
        self.steps = 0  # steps added this epoch
        self.read_steps = 0  # steps covered by the last read
        self.read_sums: list[float] = []
        self.totals: dict[str, float] = {}  # sums of earlier names (a loss whose parts changed mid-epoch)

    def add(self, stats: StepStats) -> None:
        names = ("loss", *stats.parts)
        if names != self.names and self.sums is not None:
            self._fold()
        values = torch.stack([stats.loss, *stats.parts.values()]).to(torch.float64)
        self.names, self.sums = names, values if self.sums is None else self.sums.add_(values)
        self.steps += 1
        if self.steps - self.read_steps >= self.every:
            self.read()

    def read(self) -> list[float]:
        """The current sums on the host (the one host sync of a logging interval)."""
        if self.sums is None:
            return []
        host = self.sums.tolist()
        new = self.steps - self.read_steps
        if not all(math.isfinite(v) for v in host):
            self._fail(host)
        if new and self.progress:
            previous = self.read_sums[0] if self.read_sums else 0.0
            self.progress.step_done((host[0] - previous) / new, new)
        self.read_sums, self.read_steps = host, self.steps
        for timer in self.timers:
            timer.resolve()
        return host

    def means(self) -> dict[str, float]:
        """Mean loss and parts over the epoch's steps (reads the sums if steps are unread)."""
        host = self.read() if self.steps > self.read_steps or not self.read_sums else self.read_sums
        sums = dict(self.totals)
        for name, value in zip(self.names, host):
            sums[name] = sums.get(name, 0.0) + value
        return {name: value / max(self.steps, 1) for name, value in sums.items()}

    def _fold(self) -> None:
        """The loss's parts changed: move the running sums to ``totals`` and start new ones."""
        for name, value in zip(self.names, self.read()):
            self.totals[name] = self.totals.get(name, 0.0) + value
        self.sums, self.read_sums = None, []

    def _fail(self, host: list[float]) -> None:
        bad = ", ".join(f"{name}={value}" for name, value in zip(self.names, host) if not math.isfinite(value))
        first, last = self.first_step + self.read_steps + 1, self.first_step + self.steps
        raise NonFiniteLossError(
            f"{self.what} became non-finite ({bad}) in steps {first}-{last} (epoch {self.epoch}): "
            "training diverged or the input is bad"
        )


def epoch_curves(
    scheme: Scheme, means: dict[str, float], evaluation: dict[str, Evaluation] | None, epoch_s: float
) -> dict[str, float]:
    """The curves of one epoch: training means, learning rate, time, and validation metrics if evaluated."""
    curves = {f"{CURVE_TRAIN_PREFIX}{name}": value for name, value in means.items()}
    curves[CURVE_LR] = scheme.learning_rate()
    curves[CURVE_EPOCH_TIME] = epoch_s
    for role, (metrics, _, _) in (evaluation or {}).items():
        prefix = CURVE_VAL_PREFIX if role == scheme.headline else f"{role}/{CURVE_VAL_PREFIX}"
        curves.update({f"{prefix}{k}": v for k, v in metrics.as_dict().items()})
    return curves


def pad_batch(
    images: torch.Tensor, target: torch.Tensor, multiple: int = SIZE_MULTIPLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right to a multiple of ``multiple``: images with 0, targets with the ignore label."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, target
    return F.pad(images, (0, pw, 0, ph)), F.pad(target, (0, pw, 0, ph), value=IGNORE_INDEX)


def seed_everything(seed: int) -> None:
    """Seed the global generators as a run does before its first step (the method's stream, see ``rng``)."""
    seed_method_stream(seed)
