"""Malformed studies and options stop with exit 2 before anything trains or is written (issue 15, part 7).

Each case is a valid tiny study with one thing broken. ``studybench validate`` (in this
process, through typer) must exit 2 within seconds with a message naming the file and the
key; a few go through a real ``studybench run`` to show that no store and no report is created.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import invoke, run_cli

from studybench.executors.local import first_line

VALID: dict[str, Any] = {
    "study": "bad",
    "seeds": [0],
    "baseline": "ce",
    "base": {
        "data": {
            "dataset": "synthetic",
            "options": {"num_classes": 3, "image_size": 32, "train_images": 8, "val_images": 4},
        },
        "model": {"arch": "unet", "encoder": "resnet18", "options": {"decoder_channels": [16, 16, 8, 8, 8]}},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01},
    },
    "grid": {"method": ["ce", "dice"]},
    "profiles": {"smoke": {"train": {"epochs": 1}, "seeds": [0]}},
}
INF, NAN = float("inf"), float("nan")
LONG = "x" * 300


def mutated(dotted: str, value: Any) -> str:
    """The valid study as YAML with ``dotted`` (e.g. ``base.train.lr``) set to ``value``."""
    study = copy.deepcopy(VALID)
    *parents, last = dotted.split(".")
    node = study
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return yaml.safe_dump(study, sort_keys=False)


def with_loss(loss: dict[str, Any]) -> str:
    """The valid study with a second method ``x`` trained with ``loss``."""
    return mutated("grid.method", ["ce", {"name": "x", "loss": loss}])


def _alias_bomb(depth: int = 7) -> str:
    lines = ["study: bomb", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, depth):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"base: {{loss: {{name: sum, terms: *a{depth - 1}}}}}")
    return "\n".join(lines) + "\n"


def _huge_grid() -> str:
    study = copy.deepcopy(VALID)
    study["seeds"] = list(range(100))
    study["grid"] = {"method": ["ce", "dice"], "loss.label_smoothing": [i / 10_000 for i in range(5000)]}
    return yaml.safe_dump(study)


D, T, M = "base.data", "base.train", "base.model"
#: (id, study text or bytes, fragments the error must contain besides the file name)
CASES: list[tuple[str, str | bytes, list[str]]] = [
    # data: dataset options against what labels can encode, sizes, transforms
    ("classes-0", mutated(f"{D}.options.num_classes", 0), ["data", "num_classes"]),
    ("classes-1", mutated(f"{D}.options.num_classes", 1), ["data", "num_classes"]),
    ("classes-300", mutated(f"{D}.options.num_classes", 300), ["data", "num_classes", "254", "ignore"]),
    ("classes-255", mutated(f"{D}.options.num_classes", 255), ["data", "num_classes", "254"]),
    ("classes-text", mutated(f"{D}.options.num_classes", "three"), ["data", "num_classes"]),
    ("image-size-0", mutated(f"{D}.options.image_size", 0), ["data", "image_size"]),
    ("train-images-0", mutated(f"{D}.options.train_images", 0), ["data", "no images"]),
    ("train-images-bool", mutated(f"{D}.options.train_images", True), ["data.options", "train_images", "number"]),
    ("crop-0", mutated(f"{D}.crop", 0), ["base.data.crop"]),
    ("crop-negative", mutated(f"{D}.crop", -32), ["base.data.crop"]),
    ("crop-one-side", mutated(f"{D}.crop", [32]), ["base.data.crop"]),
    ("crop-bool", mutated(f"{D}.crop", True), ["base.data.crop"]),
    ("crop-float", mutated(f"{D}.crop", 31.5), ["base.data.crop"]),
    ("resize-0", mutated(f"{D}.resize", 0), ["base.data.resize"]),
    ("resize-three-sides", mutated(f"{D}.resize", [32, 32, 3]), ["base.data.resize"]),
    ("scale-reversed", mutated(f"{D}.scale", [2.0, 0.5]), ["base.data.scale", "0 < lo <= hi"]),
    ("scale-one-value", mutated(f"{D}.scale", [0.5]), ["base.data.scale"]),
    ("scale-zero", mutated(f"{D}.scale", [0.0, 1.0]), ["base.data.scale"]),
    ("scale-inf", mutated(f"{D}.scale", [0.5, INF]), ["base.data.scale"]),
    ("eval-on-crop-without-crop", mutated(f"{D}.eval_on", "crop"), ["base.data", "eval_on", "crop"]),
    ("num-workers-negative", mutated(f"{D}.num_workers", -1), ["base.data.num_workers"]),
    ("num-workers-bool", mutated(f"{D}.num_workers", True), ["base.data.num_workers"]),
    ("dataset-unknown-option", mutated(f"{D}.options.colour", 3), ["data", "colour"]),
    # model options smp would reject when the run starts
    ("decoder-channels-text", mutated(f"{M}.options.decoder_channels", "abc"), ["model.options"]),
    ("decoder-channels-short", mutated(f"{M}.options.decoder_channels", [8, 8, 8]), ["model.options", "depth"]),
    ("model-unknown-option", mutated(f"{M}.options.wings", 2), ["model.options", "wings"]),
    ("model-arch-unknown", mutated(f"{M}.arch", "unetzz"), ["model", "unetzz"]),
    # losses against their own ranges and against the data
    ("rmi-radius-100", with_loss({"name": "rmi", "radius": 100}), ["loss", "radius 100", "32x32"]),
    ("rmi-radius-0", with_loss({"name": "rmi", "radius": 0}), ["loss", "radius"]),
    ("rmi-radius-bool", with_loss({"name": "rmi", "radius": True}), ["loss", "radius"]),
    ("rmi-factor-too-big", with_loss({"name": "rmi", "factor": 64}), ["loss", "radius", "factor 64"]),
    ("lad-even-kernel", with_loss({"name": "lad", "kernel": 4}), ["loss", "kernel"]),
    ("focal-gamma-text", with_loss({"name": "focal", "gamma": "two"}), ["loss", "gamma"]),
    ("focal-gamma-huge", with_loss({"name": "focal", "gamma": "x" * 100_000}), ["loss", "gamma", "characters"]),
    ("focal-gamma-bool", with_loss({"name": "focal", "gamma": True}), ["loss", "gamma", "expects a number"]),
    ("loss-unknown", with_loss({"name": "nope"}), ["loss", "nope"]),
    # training: finite, positive numbers; integers that are not booleans; batch vs data
    ("lr-inf", mutated(f"{T}.lr", INF), ["base.train.lr", "finite"]),
    ("lr-nan", mutated(f"{T}.lr", NAN), ["base.train.lr"]),
    ("lr-zero", mutated(f"{T}.lr", 0), ["base.train.lr"]),
    ("lr-negative", mutated(f"{T}.lr", -0.1), ["base.train.lr"]),
    ("lr-text", mutated(f"{T}.lr", "fast"), ["base.train.lr"]),
    ("momentum-negative", mutated(f"{T}.momentum", -0.5), ["base.train.momentum"]),
    ("weight-decay-inf", mutated(f"{T}.weight_decay", INF), ["base.train.weight_decay"]),
    ("poly-power-zero", mutated(f"{T}.poly_power", 0), ["base.train.poly_power"]),
    ("epochs-0", mutated(f"{T}.epochs", 0), ["base.train.epochs"]),
    ("epochs-bool", mutated(f"{T}.epochs", True), ["base.train.epochs"]),
    ("epochs-float", mutated(f"{T}.epochs", 1.5), ["base.train.epochs"]),
    ("iterations-0", mutated(f"{T}.iterations", 0), ["base.train.iterations"]),
    ("batch-size-0", mutated(f"{T}.batch_size", 0), ["base.train.batch_size"]),
    ("batch-size-bool", mutated(f"{T}.batch_size", True), ["base.train.batch_size"]),
    ("batch-size-64-of-8", mutated(f"{T}.batch_size", 64), ["train.batch_size", "64", "8 images"]),
    ("val-batch-size-0", mutated(f"{T}.val_batch_size", 0), ["base.train.val_batch_size"]),
    ("threads-0", mutated(f"{T}.threads", 0), ["base.train.threads"]),
    ("optimizer-unknown", mutated(f"{T}.optimizer", "lbfgs"), ["base.train.optimizer"]),
    # seeds, profiles, baseline
    ("seeds-bool", mutated("seeds", [True]), ["seeds"]),
    ("seeds-negative", mutated("seeds", [-1]), ["seeds"]),
    ("seeds-float", mutated("seeds", [0.5]), ["seeds"]),
    ("seeds-too-big", mutated("seeds", [2**40]), ["seeds"]),
    ("seeds-duplicate", mutated("seeds", [1, 1]), ["seeds", "unique"]),
    ("profile-seeds-empty", mutated("profiles.smoke.seeds", []), ["profiles.smoke.seeds"]),
    ("profile-seeds-bool", mutated("profiles.smoke.seeds", [True]), ["profiles.smoke.seeds"]),
    ("profile-seeds-duplicate", mutated("profiles.smoke.seeds", [3, 3]), ["profiles.smoke.seeds", "unique"]),
    ("profile-bad-lr", mutated("profiles.smoke.train", {"lr": INF}), ["profiles.smoke.train.lr"]),
    ("baseline-unknown", mutated("baseline", "nope"), ["baseline", "nope", "methods: ce, dice"]),
    # names that become folders, files and MLflow names
    ("study-name-300", mutated("study", LONG), ["study", "at most 64"]),
    ("study-name-path", mutated("study", "../escape"), ["study"]),
    ("study-name-space", mutated("study", "my study"), ["study"]),
    (
        "ablation-name-path",
        mutated("ablations", {"../evil": {"of": "ce", "vary": {"loss.label_smoothing": [0.1]}}}),
        ["ablations", "../evil"],
    ),
    (
        "ablation-name-long",
        mutated("ablations", {LONG: {"of": "ce", "vary": {"loss.label_smoothing": [0.1]}}}),
        ["ablations", "characters"],
    ),
    ("profile-name-slash", mutated("profiles", {"a/b": {"seeds": [0]}}), ["profiles", "a/b"]),
    (
        "method-name-path",
        mutated("grid.method", [{"name": "../m", "loss": {"name": "ce"}}]),
        ["grid.method[0].name", "../m"],
    ),
    (
        "method-name-space",
        mutated("grid.method", ["ce", {"name": "my dice", "loss": {"name": "dice"}}]),
        ["grid.method[1].name"],
    ),
    ("dataset-name-path", mutated("grid.dataset", ["../data"]), ["grid.dataset[0]", "../data"]),
    ("dataset-entry-name-path", mutated("grid.dataset", [{"name": "a/b"}]), ["grid.dataset[0].name"]),
    # the file itself
    ("not-utf8", "study: bad\ndescription: caf\xe9\n".encode("latin-1"), ["UTF-8", "line 2"]),
    ("alias-bomb", _alias_bomb(), ["anchors", "aliases"]),
    ("deep-nesting", "study: deep\nbase: " + "[" * 300 + "]" * 300 + "\n", ["deeper"]),
    ("too-large", "study: big\ndescription: " + "x" * 1_100_000 + "\n", ["bytes", "at most"]),
    ("empty-file", "", ["mapping"]),
    ("huge-grid", _huge_grid(), ["1000000 runs", "STUDYBENCH_MAX_RUNS"]),
    ("resources-zero-cpus", mutated("resources", {"cpus": 0}), ["resources.cpus"]),
]


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "study.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _flat(text: str) -> str:
    """Output without rich's line wrapping."""
    return " ".join(text.split())


def test_there_are_at_least_60_cases_and_the_base_study_is_valid(tmp_path):
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    ok = invoke("validate", str(_write(tmp_path, yaml.safe_dump(VALID))), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.parametrize("content,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_exits_2_naming_file_and_key(tmp_path, content, fragments):
    path = _write(tmp_path, content)
    start = time.monotonic()
    out = invoke("validate", str(path), cwd=tmp_path)
    elapsed = time.monotonic() - start
    message = _flat(out.stderr)
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message) < 2000, message  # long values are cut, never printed whole
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not (tmp_path / "results").exists()


def test_options_that_select_nothing_or_name_nothing_exit_2(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(VALID))
    for args, fragment in [
        (["run", str(path), "--only", ",,,"], "--only ',,,' has no filter term"),
        (["run", str(path), "--only", "method=nope"], "matches no run"),
        (["validate", str(path), "--profile", "smok"], "unknown profile 'smok'"),
    ]:
        out = invoke(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stdout + out.stderr)
        assert fragment in _flat(out.stderr), (args, out.stderr)
    assert not (tmp_path / "results").exists()


def test_report_of_a_study_with_an_unsafe_ablation_name_writes_nothing(tmp_path):
    text = mutated("ablations", {"../evil": {"of": "ce", "vary": {"loss.label_smoothing": [0.1]}}})
    out = invoke("report", str(_write(tmp_path, text)), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ablations" in _flat(out.stderr)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    "case", ["classes-300", "batch-size-64-of-8", "lr-inf", "baseline-unknown", "not-utf8", "study-name-300"]
)
def test_run_exits_2_and_writes_nothing(tmp_path, case):
    """No MLflow store, no checkpoints, no report folder; one case through a real process (its exit
    status and stderr as a shell sees them), the others through ``run`` in this process (seconds each)."""
    content, fragments = next(c[1:] for c in CASES if c[0] == case)
    path = _write(tmp_path, content)
    if case == "not-utf8":
        out = run_cli("run", str(path), cwd=tmp_path, timeout=120)
    else:
        out = invoke("run", str(path), cwd=tmp_path)  # an uncaught exception would be raised here
    assert out.returncode == 2, out.stdout + out.stderr
    message = _flat(out.stderr)
    assert str(path) in message and all(f in message for f in fragments), message
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # no results/, no reports/


class _BrokenFiles(torch.utils.data.Dataset):
    """A dataset whose files cannot be read, as a loader worker meets them."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise FileNotFoundError(f"data/mine/broken_{index}.png: cannot identify image file")


def test_a_bad_file_met_by_a_loader_worker_is_named_in_the_summary_line():
    """With num_workers >= 1 the error says "Caught ... in DataLoader worker" first and the file last."""
    loader = torch.utils.data.DataLoader(_BrokenFiles(), num_workers=1)
    with pytest.raises(FileNotFoundError) as info:
        next(iter(loader))
    assert str(info.value).startswith("Caught FileNotFoundError")
    line = first_line(info.value)
    assert line == "data/mine/broken_0.png: cannot identify image file (in a DataLoader worker)"
    assert first_line(ValueError("plain\nsecond")) == "plain"


def test_checks_against_a_dataset_on_disk(tmp_path):
    """Batch size and loss size are checked against the files too (3 training images of 24 x 32)."""
    from studybench.data.fixtures import write_cityscapes

    root = tmp_path / "cityscapes"
    write_cityscapes(root, {"train": {"aachen": 3}, "val": {"lindau": 2}})
    study = copy.deepcopy(VALID)
    study["base"]["data"] = {"dataset": "cityscapes", "root": str(root)}
    study["base"]["train"]["batch_size"] = 2
    path = _write(tmp_path, yaml.safe_dump(study))
    ok = invoke("validate", str(path), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    study["base"]["train"]["batch_size"] = 4
    too_big = invoke("validate", str(_write(tmp_path, yaml.safe_dump(study))), cwd=tmp_path)
    assert too_big.returncode == 2 and "batch_size 4 is larger than the training set (3 images)" in _flat(
        too_big.stderr
    )
    study["base"]["train"]["batch_size"] = 2
    study["grid"]["method"] = ["ce", {"name": "rmi", "loss": {"name": "rmi", "radius": 10}}]
    rmi = invoke("validate", str(_write(tmp_path, yaml.safe_dump(study))), cwd=tmp_path)
    assert rmi.returncode == 2 and "radius 10" in _flat(rmi.stderr) and "give 9x9" in _flat(rmi.stderr), rmi.stderr
