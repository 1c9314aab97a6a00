"""Component parameters take their declared types in one place (``Registry.typed``), and validation,
run keys and the built component all see the same typed value."""

from __future__ import annotations

import pytest
from helpers import TINY_STUDY

from studybench.api import load_runs
from studybench.losses import LOSSES, build_loss
from studybench.registry import Registry, RegistryError
from studybench.study.config import StudyError


def _loss_study(tmp_path, loss: str):
    """TINY_STUDY with one method whose loss section is ``loss`` (flow YAML)."""
    path = tmp_path / "study.yaml"
    path.write_text(TINY_STUDY.replace("method: [ce, dice]", f"method: [ce, {{name: m, loss: {loss}}}]"))
    return load_runs(path, None, check_data=False)[1][1]


def test_typed_converts_to_the_declared_type():
    assert LOSSES.typed("focal", {"gamma": "2"}) == {"gamma": 2.0}
    assert type(LOSSES.typed("focal", {"gamma": "2"})["gamma"]) is float
    radius = LOSSES.typed("rmi", {"radius": 3.0})["radius"]
    assert radius == 3 and type(radius) is int


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("rmi", {"radius": 3.5}, "'radius' expects int"),
        ("focal", {"gamma": True}, "'gamma' expects a number, got True"),
        ("focal", {"gamma": "two"}, "'gamma' expects float"),
        ("focal", {"gama": 2}, "did you mean 'gamma'"),
        ("sum", {}, "needs parameter(s): terms"),
    ],
)
def test_typed_refuses_what_does_not_fit(name, params, fragment):
    with pytest.raises(RegistryError) as err:
        LOSSES.typed(name, params)
    assert fragment in str(err.value)


def test_a_string_number_is_typed_in_validate_key_and_build(tmp_path):
    spelled = _loss_study(tmp_path, '{name: focal, gamma: "3"}')
    typed = _loss_study(tmp_path, "{name: focal, gamma: 3.0}")
    assert spelled.config.loss.params["gamma"] == 3.0 and type(spelled.config.loss.params["gamma"]) is float
    assert spelled.key == typed.key
    assert type(build_loss("focal", **spelled.config.loss.params).gamma) is float
    assert type(build_loss("focal", gamma="3").gamma) is float  # the public factory types too


def test_an_integral_float_is_an_int_parameter_and_a_fraction_is_refused(tmp_path):
    spec = _loss_study(tmp_path, "{name: rmi, radius: 2.0}")
    assert spec.config.loss.params["radius"] == 2 and type(spec.config.loss.params["radius"]) is int
    assert spec.key == _loss_study(tmp_path, "{name: rmi, radius: 2}").key
    assert build_loss("rmi", radius=2.0).radius == 2
    with pytest.raises(StudyError, match="radius"):
        _loss_study(tmp_path, "{name: rmi, radius: 2.5}")


def scaled(value: int, factor: float = 1.0) -> tuple[int, float]:
    return value, factor


def test_lazy_entries_import_on_first_use_and_names_stay_unique():
    registry: Registry = Registry("thing")
    registry.add("scaled", f"{__name__}:scaled", aliases=("sc",))
    assert registry.target("sc") == f"{__name__}:scaled"
    value, factor = registry.build("sc", value=3.0, factor="2")
    assert (value, factor) == (3, 2.0) and type(value) is int and type(factor) is float
    with pytest.raises(RegistryError, match="registered twice"):
        registry.add("sc", f"{__name__}:scaled")
