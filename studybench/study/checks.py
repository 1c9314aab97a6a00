"""Checks of a run that need more than one section, or the data itself, made before anything trains.

The schema (``spec``, ``config``) checks each value alone; a registry checks each component's
own parameters. What is left are the combinations that used to pass validation and then
fail (or silently misbehave) in training: a batch larger than the training set, more classes
than labels can encode next to 255 = ignore, model options smp rejects, a loss whose region
or kernel does not fit the maps it will see. Each check raises ``ValueError``; ``check_runs``
turns the first into a ``StudyError`` naming the file, the section and the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from studybench import IGNORE_INDEX
from studybench.study.config import StudyError, cut
from studybench.study.spec import DataCfg, LossCfg, ModelCfg, RunSpec, TrainCfg

#: Classes a label map can hold: 0 .. 254, since 255 means "ignore".
MAX_CLASSES = IGNORE_INDEX - 1
MIN_CLASSES = 2


def check_runs(specs: list[RunSpec], source: str, check_data: bool, losses: dict[str, Any] | None = None) -> None:
    """Every cross-section check of every distinct configuration in ``specs``; raises ``StudyError``.

    ``losses`` holds loss modules already built, by ``repr`` of their section (validation built
    them to check their parameters): a grid repeats its sections many times, and each check runs
    once per distinct input (``Once``).
    """
    seen: set[str] = set()
    once = Once(losses)
    for spec in specs:
        memo = spec.config.model_dump_json(include={"data", "model", "loss", "scheme", "train"})
        if memo in seen:
            continue
        seen.add(memo)
        for section, check in _checks(spec.config, check_data, once):
            try:
                check()
            except Exception as err:  # noqa: BLE001 - whatever would fail the run now fails validation instead
                message = cut(str(err)) or type(err).__name__
                raise StudyError(f"{source}: {section}: {message}  [in run {spec.name}]") from None


class Once:
    """Results of checks by their inputs, so that each distinct input is checked (or built) once."""

    def __init__(self, losses: dict[str, Any] | None = None) -> None:
        self.losses = {} if losses is None else losses
        self.results: dict[tuple, Any] = {}

    def __call__(self, key: tuple, work: Callable[[], Any]) -> Any:
        if key not in self.results:
            self.results[key] = work()
        return self.results[key]

    def loss(self, loss: LossCfg) -> Any:
        """The loss module of ``loss``, built at most once."""
        from studybench.losses import build_loss

        if repr(loss) not in self.losses:
            self.losses[repr(loss)] = build_loss(loss.name, **loss.params)
        return self.losses[repr(loss)]


def _checks(cfg: Any, check_data: bool, once: Once) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(section named in the error, check) in order; later checks use what the data check measured."""
    facts = {"classes": MIN_CLASSES}
    model = cfg.model.model_dump_json()
    if check_data:
        data = cfg.data.model_dump_json()
        yield "data", lambda: facts.update(once(("data", data), lambda: training_data(cfg.data)))
        yield "train.batch_size", lambda: check_batch_size(cfg.train, facts["images"])
        size = lambda: (facts["height"], facts["width"])  # noqa: E731 - read after the data check ran
        yield (
            "loss",
            lambda: once(("loss", repr(cfg.loss), size()), lambda: check_loss_fits(once.loss(cfg.loss), *size())),
        )
    classes = lambda: facts["classes"]  # noqa: E731
    yield "model.options", lambda: once(("model", model, classes()), lambda: check_model_builds(cfg.model, classes()))


def training_data(data: DataCfg) -> dict[str, int]:
    """Classes, training images, and height and width of the network input of ``data``'s training split.

    Builds the dataset (cheap: datasets load lazily) and one evaluation sample for the input
    size; random scaling is taken at its low end, the worst case for what a loss sees.
    """
    from studybench.data import build_dataset

    train_set = build_dataset(data, data.train_split, train=True)
    check_classes(train_set.num_classes, data.dataset)
    if len(train_set) == 0:
        raise ValueError(f"{data.dataset}: the training split {data.train_split!r} has no images")
    if data.crop is not None:
        height, width = (data.crop, data.crop) if isinstance(data.crop, int) else data.crop
    else:
        image, _ = build_dataset(data, data.train_split, train=False)[0]
        low = data.scale[0] if data.scale else 1.0
        height, width = (max(1, int(side * low)) for side in image.shape[-2:])
    height, width = padded(height, width)
    return {"classes": train_set.num_classes, "images": len(train_set), "height": height, "width": width}


def padded(height: int, width: int) -> tuple[int, int]:
    """The size the trainer pads inputs to (a multiple of what smp encoders downsample by)."""
    from studybench.engine.train import SIZE_MULTIPLE

    return tuple(math.ceil(side / SIZE_MULTIPLE) * SIZE_MULTIPLE for side in (height, width))


def check_classes(num_classes: int, dataset: str) -> None:
    if not MIN_CLASSES <= num_classes <= MAX_CLASSES:
        raise ValueError(
            f"{dataset}: num_classes must be in [{MIN_CLASSES}, {MAX_CLASSES}] (label {IGNORE_INDEX} means "
            f"'ignore'), got {num_classes}"
        )


def check_batch_size(train: TrainCfg, images: int) -> None:
    """A batch larger than the training set would silently train on smaller batches than the params say."""
    if train.batch_size > images:
        raise ValueError(
            f"batch_size {train.batch_size} is larger than the training set ({images} images); "
            f"use batch_size <= {images} or more training images"
        )


def check_loss_fits(module: Any, height: int, width: int) -> None:
    """Ask the built loss (and any loss inside it) whether it can work on ``height x width`` logits.

    A loss opts in by defining ``check_input_size(height, width)`` that raises ``ValueError``
    (RMI: its region must fit the downsampled maps).
    """
    for part in module.modules():
        hook = getattr(part, "check_input_size", None)
        if callable(hook):
            hook(height, width)


def check_model_builds(model: ModelCfg, num_classes: int) -> None:
    """Build the network on the meta device (no memory, no weights, milliseconds): smp checks its options.

    smp passes unknown keyword arguments on to timm encoders only and otherwise drops them, so
    with any other encoder an option the architecture does not name is refused here.
    """
    import inspect

    import segmentation_models_pytorch as smp
    import torch

    from studybench.models import build_model

    arch = smp.MODEL_ARCHITECTURES_MAPPING.get(model.arch.lower())
    if arch is not None and not model.encoder.startswith("tu-"):
        named = [k for k, p in inspect.signature(arch).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        unknown = sorted(set(model.options) - set(named))
        if unknown:
            raise ValueError(f"{model.arch} has no option {unknown[0]!r}; options: {', '.join(named)}")
    with torch.device("meta"):
        build_model(model.model_copy(update={"weights": None}), num_classes)
