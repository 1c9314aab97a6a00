"""``studybench bench``: the cost of every loss and scheme, and of the harness itself.

Modules, one concept each: ``cases`` (what is measured), ``timing`` (interleaved medians),
``cells`` (peak memory in fresh processes), ``harness`` (training loop vs a bare PyTorch loop),
``loaders`` (images/s per dataset format), ``runner`` (the grid), ``page`` (tables, figures,
README of ``reports/bench``).
"""

from __future__ import annotations
