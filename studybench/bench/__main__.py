"""``python -m studybench.bench --cell JSON``: one memory cell in a fresh process (internal).

Users run ``studybench bench``; this entry point exists so that each (loss, size) cell's peak
memory is measured in a new interpreter (see ``studybench.bench.cells``).
"""

from __future__ import annotations

import sys

from studybench.bench.cells import run_cell_child

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--cell":
        raise SystemExit("usage: python -m studybench.bench --cell JSON (internal; run `studybench bench`)")
    run_cell_child(sys.argv[2])
