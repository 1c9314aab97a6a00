"""The store is the only code that spells MLflow names: every tag, metric and artifact name of
``store/layout.py`` appears as a literal nowhere else in the package."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from studybench.store import layout

PACKAGE = Path(layout.__file__).resolve().parents[1]
#: Layout values that are also ordinary words of other vocabularies, so a literal elsewhere is not a use:
#: "lr" is torch's param-group key, "miou" the report's metric column, the rest plain words.
WORDS = {
    layout.CURVE_LR,
    layout.METRIC_MIOU,
    layout.EVAL_NATIVE,
    layout.KIND_MANIFEST,
    layout.KIND_REPORT,
    layout.ARTIFACT_REPORT_DIR,
}


def layout_names() -> set[str]:
    names: set[str] = set()
    for attr, value in vars(layout).items():
        if attr.isupper():
            names.update([value] if isinstance(value, str) else [v for v in value if isinstance(v, str)])
    return names - WORDS


def literals(path: Path) -> set[str]:
    return set(re.findall(r"""["']([^"'\n]+)["']""", path.read_text()))


def package_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name != "layout.py" or p.parent.name != "store"]


def test_layout_names_are_spelled_only_in_the_layout():
    names = layout_names()
    assert {"studybench.run_key", "train_s", "val/miou", "samples.npz", "axis."} <= names  # the check sees them
    found = {f"{p.relative_to(PACKAGE)}: {lit}" for p in package_files() for lit in literals(p) & names}
    assert not found, "use the store.layout constant instead of the literal:\n" + "\n".join(sorted(found))


def test_no_studybench_tag_literal_outside_the_layout():
    """A ``"studybench.x"`` literal that is not a module is a tag name the layout should define."""
    tags = set()
    for path in package_files():
        for lit in re.findall(r"""["'](studybench\.[a-z_]+)["']""", path.read_text()):
            if importlib.util.find_spec(lit) is None:
                tags.add(f"{path.relative_to(PACKAGE)}: {lit}")
    assert not tags, "define these tags in store/layout.py:\n" + "\n".join(sorted(tags))
