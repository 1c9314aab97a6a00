"""Discoverability: `studybench losses/datasets/schemes/archs` list every registry entry; typos get a suggestion."""

from __future__ import annotations

import inspect
import re

import pytest
from helpers import invoke

from studybench.data import DATASETS
from studybench.losses import LOSSES, build_loss
from studybench.registry import RegistryError
from studybench.schemes import SCHEMES
from studybench.study.config import StudyError, load_study
from studybench.study.discover import entries, format_params


def _blocks(stdout: str) -> dict[str, str]:
    """Entry name -> its lines in the listing (name line, parameters, reference)."""
    blocks: dict[str, str] = {}
    name = None
    for line in stdout.splitlines()[1:]:
        if not line.startswith(" "):
            name = line.split(":", 1)[0].split(" (alias", 1)[0]
            blocks[name] = line
        elif name is not None:
            blocks[name] += "\n" + line
    return blocks


@pytest.fixture(scope="module")
def listed_losses() -> dict[str, str]:
    result = invoke("losses")
    assert result.returncode == 0, result.stderr
    return _blocks(result.stdout)


@pytest.mark.parametrize("name", LOSSES.names())
def test_losses_lists_every_registered_loss_with_its_parameters(name, listed_losses):
    block = listed_losses[name]
    doc = inspect.getdoc(LOSSES.get(name)).splitlines()[0]
    plain = re.sub(r":\w+:`([^`]+)`", r"\1", doc).replace("``", "")  # printed without reST markup
    assert plain[:40] in block and "``" not in block  # first docstring line
    params = LOSSES.parameters(name)
    for key, param in params.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        assert key in block, (key, block)
        if param.default is not inspect.Parameter.empty and param.default is not None:
            default = repr(param.default) if isinstance(param.default, str) else str(param.default).lower()
            assert f"{key}={default}" in block.lower(), (key, block)
    if not params:
        assert "parameters: none" in block


def test_listing_is_complete_and_shows_papers(listed_losses):
    assert sorted(listed_losses) == LOSSES.names()
    assert "NeurIPS 2019" in listed_losses["rmi"] and "ICCV 2017" in listed_losses["focal"]
    assert "alias cross_entropy" in invoke("losses", "ce").stdout


@pytest.mark.parametrize(("family", "registry"), [("datasets", DATASETS), ("schemes", SCHEMES)])
def test_datasets_and_schemes_list_their_registries(family, registry):
    result = invoke(family)
    assert result.returncode == 0, result.stderr
    blocks = _blocks(result.stdout)
    assert sorted(blocks) == registry.names()
    for entry in entries(family):
        assert f"parameters: {format_params(entry)}" in blocks[entry.name]


def test_archs_list_smp_architectures_without_the_parameters_we_set():
    import segmentation_models_pytorch as smp

    blocks = _blocks(invoke("archs").stdout)
    assert sorted(blocks) == sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    assert "decoder_channels" in blocks["unet"] and "encoder_name" not in blocks["unet"]
    assert "arxiv.org/abs/1505.04597" in blocks["unet"]


def test_unknown_name_on_the_command_line_suggests_one():
    result = invoke("losses", "dise")
    assert result.returncode == 2 and "did you mean 'dice'" in result.stderr


def test_registry_errors_suggest_close_names():
    with pytest.raises(RegistryError, match=r"unknown loss 'focall'; did you mean 'focal'"):
        build_loss("focall")
    with pytest.raises(RegistryError, match=r"no parameter 'radious'; did you mean 'radius'\?; valid: radius"):
        build_loss("rmi", radious=3)
    with pytest.raises(RegistryError) as err:
        build_loss("zzz")
    assert "did you mean" not in str(err.value) and "available: bce" in str(err.value)


def test_study_schema_suggests_a_close_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("study: typo\nseed: [0]\ngrid:\n  method: [ce]\n")
    with pytest.raises(StudyError, match=r"unknown key 'seed'; did you mean 'seeds'\?; allowed: study"):
        load_study(path)


def test_version_and_flags_without_a_type():
    from studybench import __version__

    assert invoke("--version").stdout.strip() == f"studybench {__version__}"
    help_text = invoke("run", "--help").stdout
    assert "--dry-run" in help_text and "<bool>" not in help_text
    assert "<int range>" in help_text  # options that take a value still show their type
