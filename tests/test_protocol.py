"""The fair-comparison protocol (issue 16, design.md "Protocol"), checked end to end on CPU.

- One seed = one data order and one augmentation per sample for every method, whatever the
  number of loader workers and whatever else consumes randomness.
- ``data.num_workers`` is a runtime key: it changes neither the run key nor the results.
- Resuming from a checkpoint gives the uninterrupted run's results.
- Predictions are scored against the native labels (logits upsampled to each mask's size).
- Losses are computed in float32 under bfloat16 autocast, for every registered loss.
- ``train.deterministic`` sets PyTorch's reproducibility switches and records them as tags.
"""

from __future__ import annotations

import copy
import hashlib
import io
from typing import Any

import numpy as np
import pytest
import torch
from test_losses_contract import EXAMPLE_PARAMS

import studybench.engine.train as trainer
from studybench.data import build_dataset
from studybench.engine import faults
from studybench.engine.checkpoint import Checkpoints
from studybench.engine.rng import TAG_CUDNN_DETERMINISTIC, TAG_DETERMINISTIC, TAG_DETERMINISTIC_ALGORITHMS, derive_seed
from studybench.losses import list_losses
from studybench.schemes import build_scheme
from studybench.study.keys import keyed_spec
from studybench.study.spec import RUNTIME_KEYS, DataCfg, RunConfig, RunSpec

LIGHT = {"arch": "unet", "encoder": "resnet18", "options": {"decoder_channels": [16, 8, 8, 8, 8]}}
#: flip + scale + crop: every sample's augmentation draws several random numbers
AUGMENTED = {
    "dataset": "synthetic",
    "options": {"num_classes": 4, "image_size": 40, "train_images": 8, "val_images": 4},
    "scale": [0.75, 1.25],
    "crop": 32,
    "flip": True,
}
#: each consumes randomness in its own way: DML a peer network, SR exit heads, center loss a randperm
METHODS = {
    "ce": {},
    "dml": {"scheme": {"name": "mutual"}},
    "sr": {"scheme": {"name": "self-regulation"}},
    "center": {"loss": {"name": "center", "max_pixels": 50}},
}
#: results that are timings, not computations
COSTS = (
    "wall_s",
    "train_s",
    "eval_s",
    "step_s",
    "step_s_iqr",
    "loss_ms",
    "loss_ms_iqr",
    "loss_share",
    "peak_mem_mb",
    "peak_extra_mb",
    "infer_ms_per_image",
    "load_start",
    "load_end",
    "cpus",
)


class MemoryRecorder:
    """A ``train.Recorder`` that keeps what it is given."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.curves: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.curves.append(dict(metrics))

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


def spec(method: str, workers: int = 0, **train: Any) -> RunSpec:
    config = {
        "data": {**AUGMENTED, "num_workers": workers},
        "model": LIGHT,
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "threads": 1, "checkpoint": False, **train},
        **METHODS[method],
    }
    return keyed_spec(study="protocol", method=method, seed=0, config=RunConfig.model_validate(config))


def run(run_spec: RunSpec, monkeypatch, checkpoints: Checkpoints | None = None) -> dict[str, Any]:
    """Execute ``run_spec``; return its final metrics (costs left out), batch hashes and tags."""
    batches: list[str] = []

    def spying_build_scheme(*args, **kwargs):
        scheme = build_scheme(*args, **kwargs)
        step = scheme.train_step

        def train_step(images, target):
            batches.append(hashlib.sha256(images.numpy().tobytes() + target.numpy().tobytes()).hexdigest())
            return step(images, target)

        scheme.train_step = train_step
        return scheme

    monkeypatch.setattr(trainer, "build_scheme", spying_build_scheme)
    recorder = MemoryRecorder()
    with torch.random.fork_rng():
        result = trainer.execute(run_spec, recorder, checkpoints=checkpoints)
    metrics = {k: v for k, v in result.metrics.items() if k not in COSTS}
    return {"metrics": metrics, "batches": batches, "tags": recorder.tags}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The center-loss run with 0 workers: its batches are what every method and worker count must see."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run(spec("center"), monkeypatch)


@pytest.mark.parametrize("method, workers", [(m, w) for m in METHODS for w in (0, 2) if (m, w) != ("center", 0)])
def test_every_method_and_worker_count_sees_the_same_batches(reference, monkeypatch, method, workers):
    result = run(spec(method, workers), monkeypatch)
    assert len(reference["batches"]) == 4 and len(set(reference["batches"])) == 4
    assert result["batches"] == reference["batches"]
    if method == "center":  # same computation with 2 workers: identical results on CPU
        assert result["metrics"] == reference["metrics"]


def test_num_workers_is_a_runtime_key():
    assert "data.num_workers" in RUNTIME_KEYS
    assert spec("center", workers=0).key == spec("center", workers=2).key


def test_resume_from_a_checkpoint_gives_the_uninterrupted_results(reference, monkeypatch, tmp_path):
    """Killed in epoch 1 (after epoch 0's checkpoint), resumed in a fresh scheme: the same batches and results."""
    checkpoints = Checkpoints(tmp_path)
    interrupted = spec("center", checkpoint=True)
    monkeypatch.setenv(faults.ENV, "error@train:1")
    monkeypatch.setattr(faults, "_fired", set())
    with pytest.raises(RuntimeError, match="error@train:1"):
        run(interrupted, monkeypatch, checkpoints)
    assert checkpoints.epoch(interrupted) == 1
    resumed = run(interrupted, monkeypatch, checkpoints)  # the fault fires once per process
    assert resumed["batches"] == reference["batches"][2:]  # epoch 1's two batches
    assert resumed["metrics"] == reference["metrics"]


def test_streams_are_pure_functions_of_their_key():
    assert derive_seed(0, "augment", 1, 2) == derive_seed(0, "augment", 1, 2)
    keys = [(0, "augment", 1, 2), (0, "augment", 2, 1), (1, "augment", 1, 2), (0, "order", 1, 2), (0, "order", 1)]
    assert len({derive_seed(*k) for k in keys}) == len(keys)
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1, "order")


# ----------------------------------------------------------------------------- native-resolution evaluation
class Oracle(torch.nn.Module):
    """Perfect at the network's input resolution: returns one-hot logits of the given label maps, in order."""

    def __init__(self, masks: list[torch.Tensor], num_classes: int) -> None:
        super().__init__()
        self.masks, self.num_classes = list(masks), num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(images.shape[0], self.num_classes, *images.shape[-2:])
        for i in range(images.shape[0]):
            mask = self.masks.pop(0)
            h, w = mask.shape
            valid = mask != 255
            out[i, :, :h, :w] = (
                torch.nn.functional.one_hot(mask.clamp(max=self.num_classes - 1), self.num_classes).permute(2, 0, 1)
                * valid
            )
        return out


def bilinear_numpy(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``x [C, h, w]`` with half-pixel centres (``align_corners=False``), naively."""

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, ly = taps(x.shape[1], size[0])
    x0, x1, lx = taps(x.shape[2], size[1])
    out = np.empty((x.shape[0], *size))
    for i in range(size[0]):
        for j in range(size[1]):
            out[:, i, j] = (1 - ly[i]) * ((1 - lx[j]) * x[:, y0[i], x0[j]] + lx[j] * x[:, y0[i], x1[j]]) + ly[i] * (
                (1 - lx[j]) * x[:, y1[i], x0[j]] + lx[j] * x[:, y1[i], x1[j]]
            )
    return out


def miou_numpy(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """mIoU from one confusion matrix over the dataset, counted pixel by pixel."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, gt in pairs:
        for p, g in zip(pred.ravel(), gt.ravel()):
            if g != 255:
                matrix[g, p] += 1
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def test_an_oracle_at_reduced_resolution_scores_what_a_native_evaluator_gives():
    """64x64 labels, input resized to 32x16: the oracle is perfect at 32x16 but not at 64x64."""
    cfg = DataCfg(options={"num_classes": 4, "image_size": 64, "val_images": 3}, resize=[32, 16])
    val_set = build_dataset(cfg, "val", train=False)
    native = [val_set[i][1] for i in range(len(val_set))]
    reduced = [
        build_dataset(cfg.model_copy(update={"eval_on": "crop", "crop": [32, 16]}), "val", train=False)[i][1]
        for i in range(len(val_set))
    ]  # labels resized as the input (nearest), as before issue 16
    assert all(m.shape == (64, 64) for m in native) and all(m.shape == (32, 16) for m in reduced)

    loader = trainer.val_loader_for(val_set, batch_size=2, seed=0, workers=0)
    metrics, _, samples = trainer.evaluate(Oracle(reduced, 4), loader, 4, torch.device("cpu"))

    one_hot = [np.eye(4)[m.clamp(max=3).numpy()].transpose(2, 0, 1) * (m != 255).numpy() for m in reduced]
    preds = [bilinear_numpy(x, (64, 64)).argmax(0) for x in one_hot]
    expected = miou_numpy([(p, m.numpy()) for p, m in zip(preds, native)], 4)
    assert metrics.miou == pytest.approx(expected, rel=1e-12)
    assert metrics.miou < 0.99  # perfect at the reduced size only
    assert all(s.shape == (64, 64) for s in samples["pred"]) and samples["image"][0].shape == (3, 64, 64)


def test_a_validation_batch_may_mix_input_and_mask_sizes():
    """VOC-like: inputs of two sizes in one batch, masks twice their size; each scored at its own size."""
    g = torch.Generator().manual_seed(0)
    masks = [torch.randint(0, 3, (64, 64), generator=g), torch.randint(0, 3, (40, 96), generator=g)]
    masks[1][:5] = 255
    reduced = [m[::2, ::2] for m in masks]  # the oracle is perfect at half size
    images = [torch.zeros(3, *m.shape) for m in reduced]
    loader = [([images[0], images[1], images[0]], [masks[0], masks[1], masks[0]])]
    metrics, matrix, samples = trainer.evaluate(Oracle([*reduced, reduced[0]], 3), loader, 3, torch.device("cpu"))
    assert int(matrix.matrix.sum()) == 2 * 64 * 64 + 40 * 96 - 5 * 96
    assert 0.3 < metrics.miou < 1.0
    assert samples["pred"][1].shape == (40, 96) and samples["image"][1].shape == (3, 40, 96)
    payload = trainer._samples_npz(samples, build_dataset(DataCfg(options={"num_classes": 3}), "val", train=False))
    with np.load(io.BytesIO(payload)) as npz:  # padded to the largest sample: labels with 255
        assert npz["pred"].shape == (3, 64, 96) and npz["image"].shape == (3, 3, 64, 96)
        assert (npz["target"][0, :, 64:] == 255).all() and (npz["target"][1, 40:] == 255).all()


def test_eval_on_crop_is_tagged_as_a_deviation(monkeypatch):
    assert run(spec("ce", iterations=1), monkeypatch)["tags"][trainer.TAG_EVAL_LABELS] == trainer.EVAL_NATIVE
    crop = spec("ce", iterations=1)
    crop = crop.model_copy(
        update={
            "config": crop.config.model_copy(update={"data": crop.config.data.model_copy(update={"eval_on": "crop"})})
        }
    )
    assert run(crop, monkeypatch)["tags"][trainer.TAG_EVAL_LABELS] == trainer.EVAL_CROP


# ----------------------------------------------------------------------------- float32 losses under AMP
@pytest.mark.parametrize("name", list_losses())
def test_every_loss_receives_and_returns_float32_under_bf16_autocast(name):
    """The scheme's forward runs in bfloat16 (AMP forced on, on the CPU); the loss must get float32
    logits (and features), return float32, and equal its value on the float32 copy of those outputs."""
    config = RunConfig.model_validate({"model": LIGHT, "loss": {"name": name, **EXAMPLE_PARAMS.get(name, {})}})
    scheme = build_scheme(config, 4, torch.device("cpu"), total_steps=1)
    scheme.amp = True  # autocast is CUDA-only in runs; the CPU's bfloat16 autocast exercises the same path
    fresh = copy.deepcopy(scheme.loss)
    seen: dict[str, Any] = {}
    forward = scheme.loss.forward

    def spy(logits, target, **extra):
        seen["inputs"] = {"logits": logits.detach().clone(), **{k: v.detach().clone() for k, v in extra.items()}}
        seen["value"] = forward(logits, target, **extra)
        return seen["value"]

    scheme.loss.forward = spy
    g = torch.Generator().manual_seed(0)
    images, target = torch.rand(2, 3, 32, 32, generator=g), torch.randint(0, 4, (2, 32, 32), generator=g)
    target[:, :4] = 255
    with torch.autocast("cpu", dtype=torch.bfloat16):  # even inside a caller's autocast
        scheme.train_step(images, target)
    assert all(v.dtype == torch.float32 for v in seen["inputs"].values()), {
        k: v.dtype for k, v in seen["inputs"].items()
    }
    assert seen["value"].dtype == torch.float32
    inputs = seen["inputs"]
    reference = fresh(inputs.pop("logits"), target, **inputs)
    assert torch.equal(seen["value"].detach(), reference.detach())


@pytest.mark.parametrize("scheme_name", ["mutual", "self-regulation"])
def test_multi_network_schemes_compute_their_losses_in_float32(scheme_name, monkeypatch):
    import studybench.schemes.mutual as mutual
    from studybench.schemes.self_regulation import SelfRegulationScheme

    dtypes: list[torch.dtype] = []
    kl, sr_loss = mutual.mutual_kl, SelfRegulationScheme.loss
    monkeypatch.setattr(
        mutual, "mutual_kl", lambda z, other, t: dtypes.extend([z.dtype, other.dtype]) or kl(z, other, t)
    )
    monkeypatch.setattr(
        SelfRegulationScheme,
        "loss",
        lambda self, outs, t: dtypes.extend(o.dtype for o in outs) or sr_loss(self, outs, t),
    )
    config = RunConfig.model_validate({"model": LIGHT, "scheme": {"name": scheme_name}})
    scheme = build_scheme(config, 4, torch.device("cpu"), total_steps=1)
    scheme.amp = True
    images, target = torch.rand(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    stats = scheme.train_step(images, target)
    assert dtypes and set(dtypes) == {torch.float32} and stats.loss.dtype == torch.float32


# ----------------------------------------------------------------------------- deterministic switch
def test_deterministic_sets_every_switch_records_them_and_restores_the_process(monkeypatch):
    seen: dict[str, bool] = {}
    real = trainer.train_one_epoch

    def checking_train_one_epoch(*args, **kwargs):
        seen["algorithms"] = torch.are_deterministic_algorithms_enabled()
        seen["cudnn"] = torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", checking_train_one_epoch)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    result = run(spec("ce", iterations=1, deterministic=True), monkeypatch)
    assert seen == {"algorithms": True, "cudnn": True}
    tags = result["tags"]
    assert tags[TAG_DETERMINISTIC] == "true" and tags[TAG_DETERMINISTIC_ALGORITHMS] == "true"
    assert tags[TAG_CUDNN_DETERMINISTIC] == "true" and tags["studybench.cudnn_benchmark"] == "false"
    assert tags["studybench.cublas_workspace_config"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() == before
    plain = run(spec("ce", iterations=1), monkeypatch)
    assert plain["tags"][TAG_DETERMINISTIC] == "false"
