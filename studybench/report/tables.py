"""Tables of a report, written as Markdown and CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: Main table: one row per run (display name -> column in the collected frame).
RUN_COLUMNS = {
    "method": "method",
    "arch": "arch",
    "dataset": "dataset",
    "seed": "seed",
    "mIoU": "miou",
    "aAcc": "pixel_acc",
    "mAcc": "mean_acc",
    "wall s": "wall_s",
    "peak MB": "peak_mem_mb",
}


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({name: frame[col] if col in frame else pd.NA for name, col in RUN_COLUMNS.items()})
    return table.round({"mIoU": 4, "aAcc": 4, "mAcc": 4, "wall s": 1, "peak MB": 0})


def write_table(table: pd.DataFrame, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.md`` and ``<stem>.csv``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    md.write_text(table.to_markdown(index=False) + "\n")
    table.to_csv(csv, index=False)
    return [md, csv]
