"""Dataset registry: YAML name -> dataset class, plus ``build_dataset`` for the trainer.

Datasets are listed by where they live: their modules (and torch) are imported when one is
first built or verified, not to list or describe them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from studybench.registry import Registry, lazy_exports

if TYPE_CHECKING:
    from studybench.data.base import SegDataset
    from studybench.study.spec import DataCfg

DATASETS: Registry[SegDataset] = Registry("dataset", reserved=("root", "split", "transform"))
DATASETS.add("synthetic", "studybench.data.synthetic:SyntheticSegmentation")
DATASETS.add("voc2012", "studybench.data.voc:VOC2012")
DATASETS.add("voc2012-aug", "studybench.data.voc:VOC2012Aug")
DATASETS.add("cityscapes", "studybench.data.cityscapes:Cityscapes")
DATASETS.add("camvid", "studybench.data.camvid:CamVid")
DATASETS.add("folder", "studybench.data.folder:FolderDataset")


def resolve_root(cfg: DataCfg) -> Path:
    """``data.root`` if given, else ``$STUDYBENCH_DATA/<name>``, else ``./data/<name>``."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    env = os.environ.get("STUDYBENCH_DATA")
    return Path(env) / cfg.dataset if env else Path("data") / cfg.dataset


def verify_dataset(cfg: DataCfg, split: str) -> None:
    """Check, before training, that ``split`` of the configured dataset can be loaded; for the
    evaluation split, also that the training split holds none of its images."""
    DATASETS.get(cfg.dataset).verify(resolve_root(cfg), split, **DATASETS.typed(cfg.dataset, cfg.options))
    if split == cfg.val_split and cfg.train_split != split:
        check_splits_disjoint(cfg)


def check_splits_disjoint(cfg: DataCfg) -> None:
    """``SplitOverlapError`` if an image file is in both the training and the evaluation split.

    Why: a configuration such as VOC ``train_split: trainval`` with ``val_split: val`` trains on
    the evaluation images, and every score it reports is inflated. Generated datasets (no files)
    have nothing to compare.
    """
    from studybench.data.files import FileSegDataset, overlap_error

    cls, root = DATASETS.get(cfg.dataset), resolve_root(cfg)
    if not issubclass(cls, FileSegDataset):
        return
    options = DATASETS.typed(cfg.dataset, cfg.options)
    train, val = (cls(root=root, split=s, **options) for s in (cfg.train_split, cfg.val_split))
    shared = {p.resolve() for p, _ in train.samples} & {p.resolve() for p, _ in val.samples}
    if shared:
        what = f"{cfg.dataset}: training split {cfg.train_split!r} and evaluation split {cfg.val_split!r}"
        raise overlap_error(what, [p.stem for p in shared])


def build_dataset(cfg: DataCfg, split: str, train: bool) -> SegDataset:
    """The configured dataset's ``split``, with training or evaluation transforms.

    With ``data.carve`` the training split loses its carved tuning images, and a run that
    scores on them (a tuning trial) gets them as its evaluation split: the reported split is
    then never opened.
    """
    from studybench.data.carve import carved_part
    from studybench.data.transforms import build_transform

    cls, options = DATASETS.get(cfg.dataset), DATASETS.typed(cfg.dataset, cfg.options)
    carve = cfg.carve
    if carve is not None and (split == cfg.train_split or carve.score_on == "carved"):
        transform = build_transform(cfg, train=train)
        base = cls(root=resolve_root(cfg), split=cfg.train_split, transform=transform, **options)
        return carved_part(base, carve, "fit" if split == cfg.train_split else "tune")
    return cls(root=resolve_root(cfg), split=split, transform=build_transform(cfg, train=train), **options)


def list_datasets() -> list[str]:
    return DATASETS.names()


__getattr__ = lazy_exports(__name__, dict.fromkeys(("DataUnavailableError", "SegDataset"), "studybench.data.base"))


__all__ = ["DATASETS", "DataUnavailableError", "SegDataset", "build_dataset", "list_datasets", "verify_dataset"]
