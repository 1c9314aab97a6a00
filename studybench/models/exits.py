"""Training-only auxiliary exits for any smp model (the multi-exit network Self-Regulation needs).

Why a separate module instead of a subclass of the model: the exits exist only while
training, so evaluation and export must see exactly the plain smp model (same parameters,
FLOPs and speed). ``ExitHeads`` holds the auxiliary heads and runs the plain model's own
encoder, decoder and head in the order smp's ``forward`` does, so exit e0 is bit-for-bit the
plain model's output; the scheme keeps the heads to itself and evaluates only the model.

Exits (Zhang et al., ICCV 2021, methods.md §4): e0 is the final output; e1..e4 sit on encoder
features 1..4 (for smp encoders ``encoder(x)`` returns ``[x, stem, stage1, stage2, stage3, ...]``),
each ``Conv3x3(->256)+BN+ReLU -> Conv3x3(256->256)+BN+ReLU -> Conv1x1(->C)``, upsampled
bilinearly to the input. Every exit, e0 included, has an image-level presence head
``GAP(exit logits) -> Linear(C, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Encoder features that carry an auxiliary exit (index 0 is the input image itself).
EXIT_FEATURES = (1, 2, 3, 4)
#: Width of the auxiliary exit heads (as in the official code).
EXIT_WIDTH = 256


@dataclass
class ExitOutputs:
    """Outputs of one multi-exit forward pass, index 0 = the final output e0.

    Shape: ``logits[e]`` is ``[B, C, H, W]`` (input size), ``presence[e]`` is ``[B, C]``.
    """

    logits: list[torch.Tensor]
    presence: list[torch.Tensor]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ExitHead(nn.Module):
    """One auxiliary segmentation exit on an encoder feature map (logits at the feature's size)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = EXIT_WIDTH) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(in_channels, width), _conv_bn_relu(width, width), nn.Conv2d(width, num_classes, 1)
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.body(feature)


class ExitHeads(nn.Module):
    """The training-only part of a multi-exit network around a plain smp ``model``.

    The model is *not* a submodule (it stays owned, optimised and evaluated as the plain
    network); ``forward(model, images)`` runs it and the heads together.

    Args:
        encoder_channels: ``model.encoder.out_channels`` (index 0 = input channels).
        num_classes: C.
        exits: build the auxiliary exits e1..e4; ``False`` gives only e0's presence head.
    """

    def __init__(self, encoder_channels: tuple[int, ...] | list[int], num_classes: int, exits: bool = True) -> None:
        super().__init__()
        if len(encoder_channels) <= max(EXIT_FEATURES):
            raise ValueError(
                f"multi-exit training needs an encoder with at least {max(EXIT_FEATURES)} stages, got channels "
                f"{tuple(encoder_channels)} (raise model.options.encoder_depth)"
            )
        self.num_classes = num_classes
        chosen = EXIT_FEATURES if exits else ()
        self.exits = nn.ModuleList([ExitHead(encoder_channels[i], num_classes) for i in chosen])
        self.presence = nn.ModuleList([nn.Linear(num_classes, num_classes) for _ in range(1 + len(chosen))])

    @classmethod
    def for_model(cls, model: nn.Module, num_classes: int, exits: bool = True) -> ExitHeads:
        if not isinstance(model, smp.base.SegmentationModel):
            raise TypeError(f"multi-exit training needs an smp SegmentationModel, got {type(model).__name__}")
        return cls(tuple(model.encoder.out_channels), num_classes, exits=exits)

    @property
    def num_exits(self) -> int:
        return len(self.presence)

    def forward(self, model: nn.Module, images: torch.Tensor) -> ExitOutputs:
        features = model.encoder(images)
        final = model.segmentation_head(model.decoder(features))
        size = images.shape[-2:]
        logits = [final]
        for feature_index, head in zip(EXIT_FEATURES, self.exits):
            aux = head(features[feature_index])
            logits.append(F.interpolate(aux, size=size, mode="bilinear", align_corners=False))
        # GAP over each exit's (input-sized) logits, the same for e0 and the auxiliary exits
        presence = [head(z.mean(dim=(2, 3))) for head, z in zip(self.presence, logits)]
        return ExitOutputs(logits=logits, presence=presence)


def exit_costs(model: nn.Module, heads: ExitHeads, image_size: int = 64) -> dict[str, float]:
    """Extra parameters (M) and extra training GFLOPs per megapixel of input that ``heads`` add
    (and the plain model's own training GFLOPs per megapixel, for the ratio).

    Counted with ``FlopCounterMode`` on a 2-image dummy batch: (multi-exit forward+backward)
    minus (plain forward+backward), so the heads' forward, their weight and input gradients
    and the presence heads are all included. Convolution FLOPs scale with the input area,
    so the figure is given per megapixel (multiply by H·W/1e6 for one image). Run in eval
    mode so BatchNorm statistics are untouched; parameter gradients are cleared afterwards.
    """
    modes = (model.training, heads.training)
    model.eval()
    heads.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(0)  # leaves the global RNG (data order, init) alone
    dummy = torch.rand(2, 3, image_size, image_size, device=device, generator=generator)

    def count(multi: bool) -> int:
        with FlopCounterMode(display=False) as counter:
            if multi:
                out = heads(model, dummy)
                total = sum(z.float().mean() for z in out.logits) + sum(q.float().mean() for q in out.presence)
            else:
                total = model(dummy).float().mean()
            total.backward()
        return counter.get_total_flops()

    try:
        base = count(False)
        extra = count(True) - base
    finally:
        for module in (model, heads):
            module.zero_grad(set_to_none=True)
        model.train(modes[0])
        heads.train(modes[1])
    pixels = 2 * image_size * image_size
    return {
        "extra_params_m": sum(p.numel() for p in heads.parameters()) / 1e6,
        "extra_train_gflops_per_mpx": extra / pixels * 1e6 / 1e9,
        "base_train_gflops_per_mpx": base / pixels * 1e6 / 1e9,
    }
