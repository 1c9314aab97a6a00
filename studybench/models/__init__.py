"""Model factory over segmentation-models-pytorch: any smp architecture and encoder by name.

``build_model`` returns the plain smp model (what is evaluated and exported).
``forward_outputs`` runs it and also returns intermediate outputs a loss declared it
needs (``features``: the decoder's per-pixel features before the segmentation head), by
calling the model's own encoder, decoder and head in the same order smp's forward does.
"""

from __future__ import annotations

from collections.abc import Iterable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from studybench.spec import ModelCfg

#: Outputs a loss may ask for, beyond logits.
MODEL_OUTPUTS = ("features",)


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
