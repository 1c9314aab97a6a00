"""Dataset registry: YAML name -> dataset class, plus ``build_dataset`` for the trainer."""

from __future__ import annotations

import os
from pathlib import Path

from studybench.data.base import DataUnavailableError, SegDataset
from studybench.data.camvid import CamVid
from studybench.data.cityscapes import Cityscapes
from studybench.data.files import FileSegDataset, overlap_error
from studybench.data.folder import FolderDataset
from studybench.data.synthetic import SyntheticSegmentation
from studybench.data.transforms import build_transform
from studybench.data.voc import VOC2012, VOC2012Aug
from studybench.registry import Registry
from studybench.study.spec import DataCfg

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
    """Check, before training, that ``split`` of the configured dataset can be loaded; for the
    evaluation split, also that the training split holds none of its images."""
    DATASETS.get(cfg.dataset).verify(resolve_root(cfg), split, **cfg.options)
    if split == cfg.val_split and cfg.train_split != split:
        check_splits_disjoint(cfg)


def check_splits_disjoint(cfg: DataCfg) -> None:
    """``SplitOverlapError`` if an image file is in both the training and the evaluation split.

    Why: a configuration such as VOC ``train_split: trainval`` with ``val_split: val`` trains on
    the evaluation images, and every score it reports is inflated. Generated datasets (no files)
    have nothing to compare.
    """
    cls, root = DATASETS.get(cfg.dataset), resolve_root(cfg)
    if not issubclass(cls, FileSegDataset):
        return
    train, val = (cls(root=root, split=s, **cfg.options) for s in (cfg.train_split, cfg.val_split))
    shared = {p.resolve() for p, _ in train.samples} & {p.resolve() for p, _ in val.samples}
    if shared:
        what = f"{cfg.dataset}: training split {cfg.train_split!r} and evaluation split {cfg.val_split!r}"
        raise overlap_error(what, [p.stem for p in shared])


def build_dataset(cfg: DataCfg, split: str, train: bool) -> SegDataset:
    """The configured dataset's ``split``, with training or evaluation transforms."""
    cls = DATASETS.get(cfg.dataset)
    return cls(root=resolve_root(cfg), split=split, transform=build_transform(cfg, train=train), **cfg.options)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "DataUnavailableError", "SegDataset", "build_dataset", "list_datasets", "verify_dataset"]
