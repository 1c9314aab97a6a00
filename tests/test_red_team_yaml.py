"""Red team, grids: study files built to crash or flood the loader get one short message and exit 2.

Each file is a real CLI call in this process (``invoke``); what is asserted is the exit code,
that the message names the file and the fix, and that its size stays bounded.
"""

from __future__ import annotations

import pytest
from helpers import invoke

from studybench.study.config import MAX_LISTED_ERRORS, MAX_YAML_CHARS


def _flow_nesting(levels: int) -> str:
    return "study: x\nbase: " + "[" * levels + "]" * levels + "\n"


def _indent_nesting(levels: int) -> str:
    """``levels`` block mappings, one space deeper each (about 500 kB for 1,000 levels)."""
    lines = ["study: x", "base:"] + [" " * (i + 1) + f"k{i}:" for i in range(levels)]
    return "\n".join([*lines, " " * (levels + 1) + "v"]) + "\n"


def _dash_nesting(levels: int) -> str:
    return "study: x\nbase:\n  " + "- " * levels + "v\n"


def _string_aliases(chars: int, copies: int) -> str:
    """One long string aliased ``copies`` times: a small file whose value is ``chars * copies`` characters."""
    aliases = ", ".join(["*s"] * copies)
    return f"study: x\ndescription: &s {'a' * chars}\nbase: {{loss: {{name: ce, weights: [{aliases}]}}}}\n"


@pytest.mark.parametrize(
    "text",
    [_flow_nesting(3000), _indent_nesting(1000), _dash_nesting(1000)],
    ids=["3000-flow-sequences", "1000-indented-mappings", "1000-block-sequences"],
)
def test_deep_nesting_is_refused_without_a_traceback(tmp_path, text):
    study = tmp_path / "deep.yaml"
    study.write_text(text)
    result = invoke("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "deep.yaml" in result.stderr and "deeper than 200 levels" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_quadratic_string_aliases_are_refused_before_anything_is_written(tmp_path):
    text = _string_aliases(chars=5000, copies=1000)  # 5 MB of value from 10 kB of file
    assert len(text) < 20_000 and 5000 * 1000 > MAX_YAML_CHARS
    study = tmp_path / "bomb.yaml"
    study.write_text(text)
    result = invoke("run", str(study), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bomb.yaml" in result.stderr and "characters" in result.stderr and "aliases" in result.stderr
    assert not (tmp_path / "results").exists()


def test_the_same_aliases_below_the_cap_still_load(tmp_path):
    """The cap counts characters after expansion, so reusing a short value many times is fine."""
    study = tmp_path / "fine.yaml"
    study.write_text(_string_aliases(chars=10, copies=1000))
    result = invoke("validate", str(study), cwd=tmp_path)
    assert "anchors" not in result.stderr  # it fails later, on the loss's unknown option, not on size
    assert "weights" in result.stderr


def test_thirty_thousand_unknown_keys_list_only_the_first_few(tmp_path):
    study = tmp_path / "keys.yaml"
    study.write_text("study: x\n" + "".join(f"u{i}: 1\n" for i in range(30_000)))
    result = invoke("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("unknown key") == MAX_LISTED_ERRORS
    assert f"{30_000 - MAX_LISTED_ERRORS} more problems" in result.stderr
    assert len(result.stderr) < 10_000  # was 9.4 MB


def test_the_params_of_one_run_are_bounded_in_number_and_characters(tracking_uri):
    """Params are written to a real store; the whole spec stays in spec.yaml, not in thousands of params."""
    from mlflow.tracking import MlflowClient

    from studybench.store.writer import _CUT_PARAM, _MAX_PARAMS, _MAX_PARAMS_CHARS, RunLogger, StudyWriter

    writer = StudyWriter(tracking_uri, "params")
    run_id = writer.client.create_run(writer.ensure_experiment()).info.run_id
    RunLogger(writer.client, run_id).log_params({f"k{i:04d}": "x" * 5000 for i in range(3000)})
    params = MlflowClient(tracking_uri).get_run(run_id).data.params
    assert len(params) == _MAX_PARAMS
    assert sum(map(len, params.values())) <= _MAX_PARAMS_CHARS + _MAX_PARAMS * len(_CUT_PARAM)
    assert params["k0000"] == "x" * 5000 and params["k0999"] == _CUT_PARAM  # the first ones whole, then the note


def test_a_deeply_nested_param_read_back_from_a_store_stays_text():
    """Params are read back as YAML by the report; one planted as [[[... must not raise RecursionError."""
    from studybench.report.collect import parse_value

    deep = "[" * 3000 + "]" * 3000
    assert parse_value(deep) == deep and parse_value("[1, 2]") == [1, 2]
