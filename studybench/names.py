"""Names that become metric names, file names or Markdown cells: checked or made safe once, here.

Why: a class name is logged as the metric ``iou/<class>``; MLflow refuses names with ``<``,
``&``, ``|``, ``%``, ``#``, ``$`` or a ``..`` part, and then every run failed at its last step.
A dataset tag read back from a store becomes a figure's file name, and a ``|`` or a line break
in a reference note broke the Markdown tables of README.md.
"""

from __future__ import annotations

import re
from typing import Any

#: Characters a class name may use: MLflow's metric-name alphabet less the slash (``iou/<class>`` is one level).
CLASS_NAME = re.compile(r"[A-Za-z0-9_\-.: ]+")
#: Longest class name (MLflow metric names may have 250 characters; ``val/iou/`` comes before it).
MAX_CLASS_NAME = 200
#: Characters kept in a file stem; any other becomes ``_``.
_UNSAFE_IN_FILE = re.compile(r"[^A-Za-z0-9_.+=-]")


def check_class_names(classes: list[Any], where: str) -> None:
    """``ValueError`` naming the first class name that cannot be part of an MLflow metric name."""
    for i, name in enumerate(classes):
        text = str(name)
        ok = CLASS_NAME.fullmatch(text) and text.strip() == text and text not in (".", "..")
        if not ok or len(text) > MAX_CLASS_NAME:
            raise ValueError(
                f"{where}[{i}]: class name {text[:80]!r} cannot be a metric name (iou/<class>): use at most "
                f"{MAX_CLASS_NAME} letters, digits, spaces and _ - . : (not '.' or '..', no leading or trailing space)"
            )


def file_stem(text: str) -> str:
    """``text`` as one file name without folders: unsafe characters become ``_``, no leading dot."""
    return _UNSAFE_IN_FILE.sub("_", text).lstrip(".") or "_"


def md_cell(value: Any) -> str:
    """``value`` as the text of one Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(value).split()).replace("|", "\\|") if value is not None else ""


def markdown_table(display: Any) -> str:
    """A pandas frame of display text as a Markdown table whose cells cannot break its columns."""
    safe = display.astype(str).map(md_cell)
    safe.columns = [md_cell(c) for c in display.columns]
    return safe.to_markdown(index=False)


#: A cell that is a link to a run's page in the local MLflow UI (escaped HTML text).
_UI_URL = re.compile(r"(?<![\"=])(http://127\.0\.0\.1:\d+/#/[^<\s\"]+)")


def link_urls(html_text: str) -> str:
    """Escaped HTML whose local MLflow UI addresses become links (``open``), so a report page is a dashboard."""
    return _UI_URL.sub(r'<a href="\1">open</a>', html_text)
