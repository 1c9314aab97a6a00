"""The installed segmentation-models-pytorch is one the model code supports, and pyproject.toml says the same range."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp

from studybench.models import SMP_SUPPORTED, check_smp_version, smp_supported

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_installed_smp_is_supported():
    assert smp_supported(smp.__version__), f"smp {smp.__version__} outside {SMP_SUPPORTED}"


def test_pyproject_declares_the_supported_range():
    line = re.search(r'"segmentation-models-pytorch([^"]*)"', PYPROJECT.read_text())
    assert line is not None
    lowest, first_unsupported = SMP_SUPPORTED
    assert line.group(1) == f">={lowest},<{first_unsupported}"


@pytest.mark.parametrize(
    "version, ok",
    [("0.3.3", False), ("0.4.0", False), ("0.5.0", True), ("0.5.1.dev0", True), ("0.6.0", True),
     ("0.6.3+cu", True), ("0.7.0rc1", False), ("0.7.0", False), ("1.0", False)],
)  # fmt: skip
def test_version_check(version, ok):
    assert smp_supported(version) == ok
    if ok:
        check_smp_version(version)
    else:
        with pytest.raises(
            ImportError, match=rf"segmentation-models-pytorch >= 0\.5\.0, < 0\.7; found {re.escape(version)}"
        ):
            check_smp_version(version)
