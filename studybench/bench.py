"""``studybench bench``'s entry: the benchmark suite lives outside the package, in ``benchmarks/suite``.

The suite (loss and scheme cases, memory cells, the harness against a bare loop, loaders, the
page) is ~1,500 lines that a user of the library never imports, so it does not ship in the
wheel. From a source checkout (``pip install -e .``) this module finds it next to the package
and imports it under the name ``studybench_benchmarks``; from a wheel it says how to get it.
``python -m studybench.bench --cell JSON`` is the suite's own fresh-process entry (memory cells).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: Where the suite is in a source checkout.
SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suite"
PACKAGE = "studybench_benchmarks"


class BenchUnavailable(RuntimeError):
    """The suite is not there: studybench was installed from a wheel, not from a checkout."""


def load(module: str | None = None) -> ModuleType:
    """The suite package, or its ``module`` (``cases``, ``runner``, ``harness``, ...)."""
    package = sys.modules.get(PACKAGE) or _import_suite()
    return importlib.import_module(f"{PACKAGE}.{module}") if module else package


def load_or_exit(module: str) -> ModuleType:
    """``load(module)``, or the reason on stderr and exit status 2 (for the ``bench`` command)."""
    try:
        return load(module)
    except BenchUnavailable as err:
        print(f"studybench bench: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _import_suite() -> ModuleType:
    init = SUITE / "__init__.py"
    if not init.is_file():
        raise BenchUnavailable(
            f"`studybench bench` runs from a source checkout: {SUITE} is not there (this install came from a "
            "wheel). Clone the repository and `pip install -e .` in it, then run `studybench bench` again"
        )
    spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(SUITE)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def main(argv: list[str]) -> int:
    """``python -m studybench.bench --cell JSON``: one memory cell (internal; users run ``studybench bench``)."""
    if len(argv) != 2 or argv[0] != "--cell":
        print("usage: python -m studybench.bench --cell JSON (internal; run `studybench bench`)", file=sys.stderr)
        return 2
    load("cells").run_cell_child(argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
