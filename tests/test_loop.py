"""The training loop built for GPUs: no host read per step, losses read at the logging interval,
non-finite losses still caught (and located), evaluation every ``train.eval_every`` epochs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import studybench.engine.train as trainer
from studybench.engine.device import Placement, backend_switches, default_workers
from studybench.engine.measure import Timer, count_host_reads
from studybench.schemes import NonFiniteLossError, StepStats, build_scheme
from studybench.study.keys import keyed_spec
from studybench.study.spec import RunConfig, RunSpec, TrainCfg

CPU = torch.device("cpu")
LIGHT = {"arch": "unet", "encoder": "resnet18", "options": {"decoder_channels": [16, 8, 8, 8, 8]}}


def run_spec(train_images: int = 16, **train: Any) -> RunSpec:
    config = {
        "data": {"options": {"num_classes": 3, "image_size": 32, "train_images": train_images, "val_images": 4}},
        "model": LIGHT,
        "train": {"epochs": 1, "batch_size": 2, "lr": 0.01, "threads": 1, "checkpoint": False, **train},
    }
    return keyed_spec(study="loop", method="ce", seed=0, config=RunConfig.model_validate(config))


class Steps:
    """A ``train.Progress`` that records what ``step_done`` is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step_done(self, loss: float, steps: int = 1) -> None:
        self.calls.append((loss, steps))

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


def one_epoch(spec: RunSpec, progress: Steps | None = None, scheme=None) -> tuple[dict[str, float], Any]:
    """``train_one_epoch`` of ``spec`` with its host reads counted; the means and the counts."""
    data = trainer.build_data(spec, Placement.for_run(spec.config.train, CPU))
    scheme = scheme or build_scheme(spec.config, 3, CPU, data.total_steps, seed=0)
    state = trainer.TrainState()
    with count_host_reads(CPU) as reads:
        means = trainer.train_one_epoch(
            spec, scheme, data.train_loader, 0, state, data.total_steps, Timer(CPU), progress
        )
    assert state.step == data.total_steps
    return means, reads


def test_training_steps_read_the_host_once_per_logging_interval():
    """12 steps, logging every 4: 3 reads of the running sums, none per step (the sampler's order and the
    dataset's transforms are counted apart: they are CPU work of the loader, not device syncs)."""
    progress = Steps()
    _, reads = one_epoch(run_spec(train_images=24, log_every=4), progress)
    assert reads.count <= 12 // 4, reads.sites
    assert reads.count >= 1 and all("train.py" in site for site in reads.sites), reads.sites
    assert [steps for _, steps in progress.calls] == [4, 4, 4]
    assert all(math.isfinite(loss) for loss, _ in progress.calls)


def test_an_epoch_shorter_than_the_interval_is_read_once_at_its_end():
    progress = Steps()
    means, reads = one_epoch(run_spec(train_images=10, log_every=50), progress)
    assert reads.count == 1, reads.sites
    assert [steps for _, steps in progress.calls] == [5]
    assert progress.calls[0][0] == pytest.approx(means["loss"], rel=1e-12)


def test_epoch_means_equal_the_python_sum_of_each_step_loss():
    """The device sums are float64, in step order: exactly what summing ``float(loss)`` per step gave."""
    spec = run_spec(train_images=12, log_every=2)
    data = trainer.build_data(spec, Placement.for_run(spec.config.train, CPU))
    scheme = build_scheme(spec.config, 3, CPU, data.total_steps, seed=0)
    losses: list[float] = []
    step = scheme.train_step

    def recording(images, target):
        stats = step(images, target)
        losses.append(float(stats.loss))
        return stats

    scheme.train_step = recording
    means, _ = one_epoch(spec, scheme=scheme)
    total = 0.0
    for value in losses:
        total += value
    assert len(losses) == 6 and means["loss"] == total / 6


@pytest.mark.parametrize("bad_step, every, where", [(5, 2, "steps 5-6"), (3, 50, "steps 1-4")])
def test_a_non_finite_loss_fails_the_epoch_naming_the_steps(bad_step, every, where):
    """Found at the next read, not at the step: the message names the steps since the last finite read."""
    spec = run_spec(train_images=8 if every == 50 else 16, log_every=every)
    data = trainer.build_data(spec, Placement.for_run(spec.config.train, CPU))
    scheme = build_scheme(spec.config, 3, CPU, data.total_steps, seed=0)
    calls = []
    step = scheme.train_step

    def diverging(images, target):
        stats = step(images, target)
        calls.append(1)
        loss = stats.loss * float("nan") if len(calls) == bad_step else stats.loss
        return StepStats(loss=loss, parts=stats.parts)

    scheme.train_step = diverging
    with pytest.raises(NonFiniteLossError, match=rf"loss 'ce' became non-finite \(loss=nan\) in {where} \(epoch 0\)"):
        one_epoch(spec, scheme=scheme)


def test_eval_every_evaluates_when_due_and_always_after_the_last_epoch():
    class Curves:
        def __init__(self) -> None:
            self.by_step: dict[int, dict[str, float]] = {}
            self.tags: dict[str, str] = {}

        def log_metrics(self, metrics, step=None):
            if step is not None:
                self.by_step[step] = metrics

        def log_text(self, text, artifact_file):
            pass

        def log_bytes(self, data, artifact_file):
            pass

        def set_tags(self, tags):
            self.tags.update(tags)

    recorder = Curves()
    with torch.random.fork_rng():
        result = trainer.execute(run_spec(train_images=4, epochs=3, eval_every=2), recorder)
    assert ["val/miou" in recorder.by_step[e] for e in range(3)] == [False, True, True]
    assert recorder.by_step[2]["val/miou"] == result.metrics["miou"]
    assert recorder.tags["studybench.tf32"] == "conv" and recorder.tags["studybench.compile"] == "false"
    assert recorder.tags["studybench.cudnn_benchmark"] == "true"


def test_backend_switches_are_restored_and_benchmark_stays_off_when_deterministic():
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with backend_switches(TrainCfg(deterministic=True, tf32="none")) as tags:
        assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
        assert tags["studybench.cudnn_benchmark"] == "false" and tags["studybench.tf32"] == "none"
    with backend_switches(TrainCfg(tf32="all")):
        assert (
            torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        )
    assert (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    ) == before


def test_new_train_settings_keep_existing_keys_and_log_every_is_runtime():
    base = run_spec()
    assert run_spec(log_every=7).key == base.key  # when the host reads: not what is computed
    assert run_spec(eval_every=1, tf32="conv", compile=False, channels_last=False).key == base.key  # the defaults
    assert run_spec(channels_last=True).key != base.key and run_spec(compile=True).key != base.key
    assert run_spec(tf32="all").key != base.key and run_spec(eval_every=2).key != base.key


def test_default_workers_follow_the_cpus_and_yield_to_the_setting():
    assert default_workers(3, cpus=64) == 3 and default_workers(0, cpus=64) == 0
    assert [default_workers(None, cpus=n) for n in (1, 2, 4, 16)] == [0, 0, 2, 4]


def test_timer_joins_sections_into_one_sample_and_resumes_from_saved_samples():
    timer, saved = Timer(CPU), [1.0]
    timer.samples = saved
    with timer:
        pass
    with timer.more():
        pass
    with timer:
        pass
    assert len(timer.samples) == 3 and timer.samples[0] == 1.0 and all(s < 1.0 for s in timer.samples[1:])
    assert saved is timer.samples  # what a checkpoint saves grows with the timer


def test_checkpointed_state_holds_every_timed_step():
    """The timers are resolved at each read of the losses, so the state a checkpoint saves has them all."""
    spec = run_spec(train_images=12, log_every=4)
    data = trainer.build_data(spec, Placement.for_run(spec.config.train, CPU))
    scheme = build_scheme(spec.config, 3, CPU, data.total_steps, seed=0)
    state, timer = trainer.TrainState(), Timer(CPU)
    timer.samples, scheme.loss_timer.samples = state.step_samples, state.loss_samples
    trainer.train_one_epoch(spec, scheme, data.train_loader, 0, state, data.total_steps, timer)
    assert len(state.step_samples) == len(state.loss_samples) == 6


def test_channels_last_reaches_the_network_and_its_input():
    spec = run_spec(channels_last=True)
    scheme = build_scheme(spec.config, 3, CPU, total_steps=1, seed=0)
    weight = next(p for p in scheme.model.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    images = scheme.placement.layout(torch.rand(2, 3, 32, 32))
    assert images.is_contiguous(memory_format=torch.channels_last)
    stats = scheme.train_step(images, torch.randint(0, 3, (2, 32, 32)))
    assert torch.isfinite(stats.loss)


def test_loaders_pin_memory_only_for_cuda():
    spec = run_spec()
    assert not trainer.build_data(spec, Placement.for_run(spec.config.train, CPU)).train_loader.pin_memory
    assert Placement.for_run(spec.config.train, torch.device("cuda")).pin_memory


def test_an_all_ignored_batch_gives_zero_for_dice_and_tversky_without_a_shortcut():
    from studybench.losses import build_loss

    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    target = torch.full((2, 6, 6), 255)
    for name in ("dice", "tversky"):
        loss = build_loss(name)
        with count_host_reads(CPU) as reads:
            value = loss(logits, target)
        assert reads.count == 0, (name, reads.sites)
        (grad,) = torch.autograd.grad(value, logits)
        assert value.item() == 0.0 and not grad.any()
