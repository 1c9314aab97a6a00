"""The shareable page of a report: ``index.html`` and ``README.md`` beside the tables and figures.

Both link only to files in the same folder, so the folder can be copied, zipped or committed
as is. The page states where the numbers come from — the git commit(s) and studybench
version the runs were made with (MLflow tags), the package versions and hardware of the
machine that built the report — and lists every problem met while building it. The only
line that changes between two builds from the same store is the one starting ``Generated``.
"""

from __future__ import annotations

import html
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from studybench.names import link_urls, markdown_table
from studybench.report.tables import Table

PACKAGES = ("studybench", "torch", "segmentation-models-pytorch", "mlflow", "numpy", "pandas", "scipy", "matplotlib")
TIMESTAMP_PREFIX = "Generated"


@dataclass
class Figure:
    stem: str
    caption: str


def provenance(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, value) lines: commits and versions of the runs, packages and hardware of this machine."""
    commits = (
        frame["git_commit"].replace("", "unknown").value_counts().sort_index()
        if "git_commit" in frame
        else pd.Series(dtype=int)
    )
    versions = sorted(set(frame.get("version", pd.Series(dtype=str)).dropna()) - {""})
    hosts = (
        frame["host"].fillna("").replace("", "unknown").value_counts().sort_index()
        if "host" in frame
        else pd.Series(dtype=int)
    )
    lines = [
        ("git commit(s) of the runs", ", ".join(f"{c[:12]} ({n} runs)" for c, n in commits.items()) or "unknown"),
        ("studybench version of the runs", ", ".join(versions) or "unknown"),
        (
            "host(s) that ran them (timings and memory were measured there)",
            ", ".join(f"{h} ({n} runs)" for h, n in hosts.items()) or "unknown",
        ),
        (
            "packages (report machine)",
            ", ".join(f"{p} {_version(p)}" for p in PACKAGES) + f", python {platform.python_version()}",
        ),
        ("hardware (report machine)", hardware()),
    ]
    return lines


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def hardware() -> str:
    """CPU model and logical cores, and the CUDA GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):  # no torch import: the report needs no deep-learning stack
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
            )
            gpu = ", ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or "none"
        except (OSError, subprocess.SubprocessError):
            gpu = "unknown"
    return f"CPU {cpu}, {os.cpu_count()} logical cores; GPU {gpu}"


def timestamp() -> str:
    return f"{TIMESTAMP_PREFIX} {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `studybench report`."


def write_pages(
    out_dir: Path,
    study,
    frame: pd.DataFrame,
    tables: list[Table],
    figures: list[Figure],
    problems: list[str],
    scope: list[str] | None = None,
) -> list[Path]:
    """Write ``index.html`` and ``README.md``; return their paths.

    ``scope``: what the report covers (first line) and warnings about it (pending, failed or
    left-out runs, unequal seeds per cell), shown in the header.
    """
    prov = provenance(frame)
    scope = scope or [f"{len(frame)} finished runs; seeds {sorted(frame['seed'].unique().tolist())}"]
    return [
        _write_html(out_dir, study, frame, tables, figures, problems, prov, scope),
        _write_md(out_dir, study, frame, tables, figures, problems, prov, scope),
    ]


def _write_md(out_dir: Path, study, frame, tables, figures, problems, prov, scope) -> Path:
    lines = [f"# Report: {study.study}", "", study.description.strip() or "(no description)", ""]
    lines += [f"{scope[0]}; baseline: {study.baseline or 'none'}.", ""]
    lines += [*(f"> **Warning:** {w}" for w in scope[1:]), ""] if scope[1:] else []
    if problems:
        lines += ["## Problems while building this report", "", *(f"- {p.splitlines()[0]}" for p in problems), ""]
    lines += ["## Tables", ""]
    for t in tables:
        lines += [
            f"### {t.title}",
            "",
            markdown_table(t.display),
            "",
            t.note,
            "",
            f"Files: [{t.stem}.csv]({t.stem}.csv), [{t.stem}.tex]({t.stem}.tex)",
            "",
        ]
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"### {f.caption}", "", f"![{f.caption}]({f.stem}.png)", "", f"[PDF]({f.stem}.pdf)", ""]
    lines += ["## Provenance", "", *(f"- {k}: {v}" for k, v in prov), "", timestamp(), ""]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:left}
th{border-bottom:2px solid #444}figure{margin:1.5em 0}img{max-width:100%}.note{color:#555;font-size:13px}
.problems{background:#fff4e5;border-left:4px solid #e69500;padding:.5em 1em}code{background:#f3f3f3}"""


def _write_html(out_dir: Path, study, frame, tables, figures, problems, prov, scope) -> Path:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(study.study)} report</title><style>{_CSS}</style></head><body>',
        f"<h1>Report: {e(study.study)}</h1>",
        f"<p>{e(study.description.strip() or '(no description)')}</p>",
        f"<p>{e(scope[0])}; baseline: {e(study.baseline or 'none')}.</p>",
        *(f'<p class="problems"><b>Warning:</b> {e(w)}</p>' for w in scope[1:]),
    ]
    if problems:
        items = "".join(f"<li><pre>{e(p)}</pre></li>" for p in problems)
        parts.append(f'<div class="problems"><h2>Problems while building this report</h2><ul>{items}</ul></div>')
    toc = "".join(f'<li><a href="#{e(t.stem)}">{e(t.title)}</a></li>' for t in tables)
    toc += "".join(f'<li><a href="#fig-{e(f.stem)}">{e(f.caption)}</a></li>' for f in figures)
    parts.append(f"<h2>Contents</h2><ul>{toc}</ul><h2>Tables</h2>")
    for t in tables:
        parts.append(f'<h3 id="{e(t.stem)}">{e(t.title)}</h3>')
        parts.append(link_urls(t.display.to_html(index=False, border=0, escape=True, na_rep="-")))
        links = " ".join(f'<a href="{e(t.stem)}.{ext}">{ext}</a>' for ext in ("csv", "tex", "md"))
        parts.append(f'<p class="note">{e(t.note)} Files: {links}</p>')
    parts.append("<h2>Figures</h2>")
    for f in figures:
        parts.append(
            f'<figure id="fig-{e(f.stem)}"><a href="{e(f.stem)}.pdf"><img src="{e(f.stem)}.png" alt="{e(f.caption)}"></a>'
            f'<figcaption>{e(f.caption)} (<a href="{e(f.stem)}.pdf">PDF</a>)</figcaption></figure>'
        )
    parts.append("<h2>Provenance</h2><ul>" + "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in prov) + "</ul>")
    parts.append(f'<p class="note">{e(timestamp())}</p></body></html>')
    path = out_dir / "index.html"
    path.write_text("\n".join(parts) + "\n")
    return path
