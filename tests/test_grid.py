"""Study expansion: grid x ablations x seeds, merge order, stable keys, filters."""

from __future__ import annotations

import pytest

from studybench.study.config import StudyError, load_study
from studybench.study.grid import expand, select

STUDY = """\
study: g
seeds: [0, 1]
base:
  data: {dataset: synthetic, options: {image_size: 32}}
  model: {arch: unet, encoder: resnet18}
  loss: {name: ce, label_smoothing: 0.1}
  train: {epochs: 3, lr: 0.01}
grid:
  model.arch: [unet, fpn]
  method:
    - ce
    - {name: fl, loss: {name: focal, gamma: 1.0}, train: {lr: 0.02}}
ablations:
  gamma: {of: fl, vary: {loss.gamma: [1.0, 2.0, 3.0]}}
profiles:
  smoke: {train: {epochs: 1, lr: 0.5}, seeds: [7]}
"""


def specs_of(write_study, text=STUDY, profile=None):
    path = write_study(text)
    return expand(load_study(path), profile, source=str(path))


def test_grid_size_dedupe_and_groups(write_study):
    specs = specs_of(write_study)
    # main: 2 archs x 2 methods x 2 seeds = 8; ablation: 2 archs x 3 gammas x 2 seeds = 12,
    # of which gamma=1.0 equals the main 'fl' runs (4) -> 8 + 8 = 16 unique runs
    assert len(specs) == 16
    assert len({s.key for s in specs}) == 16
    shared = [s for s in specs if s.groups == ("main", "gamma")]
    assert len(shared) == 4 and all(s.config.loss.params["gamma"] == 1.0 for s in shared)


def test_merge_order_and_loss_section_replacement(write_study):
    specs = specs_of(write_study)
    ce = next(s for s in specs if s.method == "ce")
    fl = next(s for s in specs if s.method == "fl" and s.groups == ("main", "gamma"))
    assert ce.config.loss.params["label_smoothing"] == 0.1 and ce.config.train.lr == 0.01
    # a loss with another name replaces the section: no label_smoothing leaks into focal
    assert fl.config.loss.name == "focal" and "label_smoothing" not in fl.config.loss.params
    assert fl.config.train.lr == 0.02  # method beats base
    smoke = specs_of(write_study, profile="smoke")
    assert {s.seed for s in smoke} == {7}
    assert all(s.config.train.lr == 0.5 and s.config.train.epochs == 1 for s in smoke)  # profile beats method
    g3 = [s for s in smoke if s.axes.get("loss.gamma") == 3.0]
    assert g3 and all(s.config.loss.params["gamma"] == 3.0 for s in g3)  # ablation value beats profile


def test_keys_are_stable_and_ignore_runtime_flags(write_study):
    a = {s.name: s.key for s in specs_of(write_study)}
    reordered = STUDY.replace("train: {epochs: 3, lr: 0.01}", "train: {lr: 0.01, epochs: 3, threads: 2, device: cpu}")
    b = {s.name: s.key for s in specs_of(write_study, reordered)}
    assert a == b
    changed = STUDY.replace("lr: 0.01", "lr: 0.03")
    c = {s.name: s.key for s in specs_of(write_study, changed)}
    assert c["ce · unet · s0"] != a["ce · unet · s0"]


def test_names_and_only_filter(write_study):
    specs = specs_of(write_study)
    names = {s.name for s in specs}
    assert len(names) == len(specs)  # distinct: method, arch, the varying values, seed
    # the one dataset is in no name, arch only once (not again as arch=), ablation values only where set
    assert {"fl · fpn · gamma=3.0 · s1", "ce · unet · s0", "fl · unet · s0"} <= names
    assert [s.name for s in select(specs, "fl · fpn,gamma=3.0")] == [
        "fl · fpn · gamma=3.0 · s0",
        "fl · fpn · gamma=3.0 · s1",
    ]
    picked = select(specs, "method=fl,arch=fpn,seed=1")
    assert len(picked) == 3 and all(s.method == "fl" and s.arch == "fpn" and s.seed == 1 for s in picked)
    assert len(select(specs, "gamma=3.0")) == 4
    assert select(specs, "no-such-thing") == []


def test_names_show_what_tells_runs_apart(write_study):
    """A mapping-valued axis shows only the leaves still needed (the quick start's decoder widths
    are implied by the arch; two encoders of one arch are not); datasets show when they vary."""
    text = """\
    study: names
    seeds: [0]
    base: {model: {encoder: resnet18}}
    grid:
      dataset: [synthetic, camvid]
      model:
        - {arch: unet, options: {decoder_channels: [32, 16, 16, 8, 8]}}
        - {arch: fpn, encoder: resnet18, options: {decoder_segmentation_channels: 32}}
        - {arch: fpn, encoder: resnet34, options: {decoder_segmentation_channels: 32}}
      loss.gamma: [1.0, 2.0]
      method: [focal]
    """
    path = write_study(text)
    specs = expand(load_study(path), source=str(path), check_data=False)
    names = sorted(s.name for s in specs)
    assert len(set(names)) == len(specs) == 12
    assert names[:2] == [
        "focal · fpn · camvid · encoder=resnet18 · gamma=1.0 · s0",
        "focal · fpn · camvid · encoder=resnet18 · gamma=2.0 · s0",
    ]
    assert "focal · unet · synthetic · gamma=2.0 · s0" in names  # unet's entry names no encoder
    assert all("decoder" not in n for n in names)


def test_two_datasets_of_one_name_are_rejected(write_study):
    """They would share run names and report rows; before, two same-named entries were silently merged."""
    text = "study: d\ngrid: {dataset: [synthetic, {name: synthetic, options: {image_size: 32}}]}\n"
    with pytest.raises(StudyError, match=r"grid\.dataset\[1\]: duplicate dataset name 'synthetic'"):
        specs_of(write_study, text)


def test_method_shorthand_and_no_grid(write_study):
    specs = specs_of(write_study, "study: one\nbase: {loss: {name: dice}}\n")
    assert len(specs) == 1 and specs[0].method == "dice" and specs[0].groups == ("main",)


def test_profile_scales_iterations_keeping_the_grid_shape(write_study):
    text = """\
    study: it
    base: {train: {iterations: 20000}}
    grid:
      method: [ce, {name: ce-1k, loss: {name: ce}, train: {iterations: 1000}}]
    profiles:
      smoke: {iterations_scale: 0.002}
    """
    specs = specs_of(write_study, text, profile="smoke")
    assert sorted(s.config.train.iterations for s in specs) == [2, 40]
