"""Malformed studies fail before anything runs, with messages that name the key."""

from __future__ import annotations

import pytest

from studybench.study.config import StudyError, load_study
from studybench.study.grid import expand

VALID = """\
study: s
seeds: [0]
base:
  data: {dataset: synthetic, options: {image_size: 32, train_images: 8, val_images: 4}}
  train: {epochs: 1, batch_size: 4}
grid:
  method: [ce, dice]
"""

# (yaml text, fragments the error must contain)
MALFORMED = [
    ("study: s\nbase: {loss: {name: no-such-loss}}\n", ["loss", "no-such-loss", "available:", "ce"]),
    ("study: s\nbase: {model: {arch: unetz}}\n", ["model", "unetz", "available:", "unet"]),
    ("study: s\nbase: {data: {dataset: imagenet-seg}}\n", ["data.dataset", "imagenet-seg", "available:", "synthetic"]),
    ("study: s\nbase: {train: {epochz: 3}}\n", ["base.train.epochz", "unknown key", "allowed:", "epochs"]),
    ("study: s\nbase: {train: {epochs: three}}\n", ["base.train.epochs", "integer", "three"]),
    ("study: s\nbase: {train: {optimizer: lbfgs}}\n", ["base.train.optimizer", "sgd", "lbfgs"]),
    ("study: s\ngrid: {}\n", ["grid", "empty"]),
    ("study: s\ngrid: {method: []}\n", ["grid", "method", "no values"]),
    ("study: s\ngrid: {losss.radius: [1, 2]}\n", ["losss.radius", "unknown axis"]),
    ("study: s\nbase: {loss: {name: focal, gama: 2}}\n", ["loss", "gama", "gamma"]),
    ("study: s\nbase: {loss: {name: focal, gamma: two}}\n", ["loss", "gamma", "two"]),
    ("study: s\nbase: {lossy: {}}\n", ["base", "lossy", "allowed"]),
    ("study: s\nseeds: []\n", ["seeds"]),
    ("study: s\nseeds: [1, 1]\n", ["seeds", "unique"]),
    ("stud: s\n", ["stud", "unknown key"]),
    (
        "study: s\nablations: {r: {of: rmi, vary: {loss.radius: [1]}}}\ngrid: {method: [ce]}\n",
        ["ablations.r.of", "rmi", "methods: ce"],
    ),
    ("study: s\ngrid: {method: [{name: a, los: {name: ce}}]}\n", ["grid.method[0].los", "allowed"]),
    ("study: s\ngrid: {method: [ce, ce]}\n", ["grid.method[1].name", "duplicate"]),
    ("study: s\nbase: {data: {dataset: synthetic, options: {img_size: 3}}}\n", ["data", "img_size", "image_size"]),
    ("study: s\nprofiles: {smoke: {train: {epochs: 0}}}\n", ["profiles.smoke.train.epochs", "greater than or equal"]),
    ("- just\n- a list\n", ["mapping"]),
    ("study: s\nbase: {train: {epochs: [1\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("text,fragments", MALFORMED, ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_malformed_study_names_the_key(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(StudyError) as info:
        expand(load_study(path), source=str(path))
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_file_and_unknown_profile(tmp_path):
    with pytest.raises(StudyError, match="not found"):
        load_study(tmp_path / "nope.yaml")
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    with pytest.raises(StudyError, match="unknown profile 'smok'; profiles: \\(none defined\\)"):
        expand(load_study(path), "smok", source=str(path))


def test_missing_dataset_files_fail_before_training(tmp_path):
    path = tmp_path / "voc.yaml"
    path.write_text(f"study: s\nbase: {{data: {{dataset: voc2012, root: {tmp_path / 'nowhere'}}}}}\n")
    with pytest.raises(StudyError, match="voc2012"):
        expand(load_study(path), source=str(path))


def test_valid_study_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    specs = expand(load_study(path), source=str(path))
    assert [s.method for s in specs] == ["ce", "dice"]


def test_ordinary_anchors_and_aliases_still_load(tmp_path):
    """The alias-bomb guard measures expanded size: a study reusing a section through an alias is fine."""
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "study: s\n"
        "base:\n"
        "  data: &data {dataset: synthetic, options: {image_size: 32, train_images: 8, val_images: 4}}\n"
        "  train: {epochs: 1, batch_size: 4}\n"
        "profiles:\n"
        "  smoke: {data: *data, seeds: [0]}\n"
    )
    study = load_study(path)
    assert study.profiles["smoke"].data == study.base["data"]


def test_grid_size_limit_is_counted_before_expanding_and_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text(VALID.replace("seeds: [0]", "seeds: [0, 1, 2]"))  # 2 methods x 3 seeds = 6 runs
    monkeypatch.setenv("STUDYBENCH_MAX_RUNS", "5")
    with pytest.raises(StudyError, match="expands to 6 runs.*limit of 5.*STUDYBENCH_MAX_RUNS"):
        expand(load_study(path), source=str(path))
    monkeypatch.setenv("STUDYBENCH_MAX_RUNS", "6")
    assert len(expand(load_study(path), source=str(path))) == 6
