"""Dataset registry: YAML name -> dataset class, plus ``build_dataset`` for the trainer."""

from __future__ import annotations

import os
from pathlib import Path

from studybench.data.base import DataUnavailableError, SegDataset
from studybench.data.camvid import CamVid
from studybench.data.cityscapes import Cityscapes
from studybench.data.folder import FolderDataset
from studybench.data.synthetic import SyntheticSegmentation
from studybench.data.transforms import build_transform
from studybench.data.voc import VOC2012, VOC2012Aug
from studybench.registry import Registry
from studybench.spec import DataCfg

DATASETS: Registry[SegDataset] = Registry("dataset", reserved=("root", "split", "transform"))
DATASETS.register("synthetic")(SyntheticSegmentation)
DATASETS.register("voc2012")(VOC2012)
DATASETS.register("voc2012-aug")(VOC2012Aug)
DATASETS.register("cityscapes")(Cityscapes)
DATASETS.register("camvid")(CamVid)
DATASETS.register("folder")(FolderDataset)


def resolve_root(cfg: DataCfg) -> Path:
    """``data.root`` if given, else ``$STUDYBENCH_DATA/<name>``, else ``./data/<name>``."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    env = os.environ.get("STUDYBENCH_DATA")
    return Path(env) / cfg.dataset if env else Path("data") / cfg.dataset


def verify_dataset(cfg: DataCfg, split: str) -> None:
    """Check, before training, that ``split`` of the configured dataset can be loaded."""
    DATASETS.get(cfg.dataset).verify(resolve_root(cfg), split, **cfg.options)


def build_dataset(cfg: DataCfg, split: str, train: bool) -> SegDataset:
    """The configured dataset's ``split``, with training or evaluation transforms."""
    cls = DATASETS.get(cfg.dataset)
    return cls(root=resolve_root(cfg), split=split, transform=build_transform(cfg, train=train), **cfg.options)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "DataUnavailableError", "SegDataset", "build_dataset", "list_datasets", "verify_dataset"]
