"""Model factory over segmentation-models-pytorch: any smp architecture and encoder by name.

``build_model`` returns the plain smp model (what is evaluated and exported).
``forward_outputs`` runs it and also returns intermediate outputs a loss declared it
needs (``features``: the decoder's per-pixel features before the segmentation head), by
calling the model's own encoder, decoder and head in the same order smp's forward does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from studybench.study.spec import ModelCfg

#: smp releases this package works with, ``[lowest, first unsupported)``. 0.5.0 is the first whose
#: decoders take the encoder's features as one list (``model.decoder(features)`` below and in
#: ``exits``; 0.4 and older take ``*features``), and smp changes its API from one 0.x minor to the
#: next, so 0.7 stays out until it is tested. Keep pyproject.toml's smp line equal to this range.
SMP_SUPPORTED = ("0.5.0", "0.7")

#: Outputs a loss may ask for, beyond logits.
MODEL_OUTPUTS = ("features",)


def _release(version: str) -> tuple[int, ...]:
    """Leading release numbers of a version string (``"0.5.1.dev0"`` -> ``(0, 5, 1)``), zero-padded to 3."""
    numbers = []
    for part in version.split("+")[0].split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):  # "0rc1": a pre-release of this number ends the release part
            break
    return tuple(numbers + [0] * (3 - len(numbers)))


def smp_supported(version: str) -> bool:
    """Whether smp ``version`` lies in ``SMP_SUPPORTED``."""
    lowest, first_unsupported = SMP_SUPPORTED
    return _release(lowest) <= _release(version) < _release(first_unsupported)


def check_smp_version(version: str = smp.__version__) -> None:
    """Raise ``ImportError`` naming the supported range when smp ``version`` is outside it.

    Called at import: an unsupported smp otherwise fails deep inside a run (a decoder call
    signature) or, worse, runs and computes something else.
    """
    if not smp_supported(version):
        lowest, first_unsupported = SMP_SUPPORTED
        raise ImportError(
            f"studybench needs segmentation-models-pytorch >= {lowest}, < {first_unsupported}; found {version}. "
            f'Install a supported one: pip install "segmentation-models-pytorch>={lowest},<{first_unsupported}"'
        )


check_smp_version()


def list_archs() -> list[str]:
    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def list_encoders() -> list[str]:
    return sorted(smp.encoders.get_encoder_names())


def check_model(cfg: ModelCfg) -> None:
    """Raise ``ValueError`` naming the valid choices for an unknown arch or encoder."""
    if cfg.arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ValueError(f"unknown model arch {cfg.arch!r}; available: {', '.join(list_archs())}")
    encoders = smp.encoders.get_encoder_names()
    if cfg.encoder not in encoders and not cfg.encoder.startswith("tu-"):
        raise ValueError(
            f"unknown model encoder {cfg.encoder!r}; e.g. resnet18, resnet34, resnet50, resnet101, "
            f"efficientnet-b0, mobilenet_v2, or any timm model as 'tu-<name>' ({len(encoders)} smp encoders in all)"
        )


def build_model(cfg: ModelCfg, num_classes: int) -> nn.Module:
    """The smp model for ``cfg`` with ``num_classes`` output channels."""
    check_model(cfg)
    try:
        return smp.create_model(
            cfg.arch.lower(),
            encoder_name=cfg.encoder,
            encoder_weights=cfg.weights,
            in_channels=3,
            classes=num_classes,
            **cfg.options,
        )
    except TypeError as err:
        raise ValueError(f"model.options not accepted by smp {cfg.arch!r}: {err}") from err
    except (OSError, RuntimeError, ConnectionError) as err:
        if cfg.weights is None:
            raise
        raise RuntimeError(
            f"could not load {cfg.weights!r} weights for encoder {cfg.encoder!r} ({err}). This machine may be "
            "offline: set model.weights: null, or pre-populate the torch hub cache (~/.cache/torch/hub)."
        ) from err


def forward_outputs(model: nn.Module, images: torch.Tensor, wanted: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """``{"logits": ..., **wanted}``; plain ``model(images)`` when nothing extra is wanted."""
    wanted = set(wanted)
    unknown = wanted - set(MODEL_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown model output(s) {sorted(unknown)}; available: {', '.join(MODEL_OUTPUTS)}")
    if not wanted:
        return {"logits": model(images)}
    if not isinstance(model, smp.base.SegmentationModel):
        raise TypeError(f"decoder features need an smp SegmentationModel, got {type(model).__name__}")
    features = model.encoder(images)
    decoded = model.decoder(features)
    return {"logits": model.segmentation_head(decoded), "features": decoded}
