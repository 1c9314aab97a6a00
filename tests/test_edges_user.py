"""What a new user and an attacker hit first (issue 26): each mistake gets one message, exit 2, nothing written."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO, SMALL_BASE, TINY_STUDY, invoke, run_cli, run_study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------- tracking URIs
@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("sqlite:///:memory:", "in-memory database"),
        ("sqlite://", "in-memory database"),
        ("file:///{tmp}/store", "sqlite:///{tmp}/store/mlflow.db"),
        ("{tmp}/store.db", "sqlite:///{tmp}/store.db"),
        ("postgresql+pg8000://u@127.0.0.1/db", "driver 'pg8000' is not installed"),
        ("postgresql+psycopg2://u:secret@127.0.0.1:{closed}/db", "nothing answers at postgresql+psycopg2://u:***@"),
        ("http://127.0.0.1:{closed}", "nothing answers at http://127.0.0.1:{closed} (Connection refused)"),
        ("http://no-such-host.invalid:5000", "its host name does not resolve"),
    ],
)
def test_a_tracking_uri_that_cannot_hold_a_study_is_refused_in_seconds(tmp_path, uri, said):
    closed = free_port()
    uri, said = (s.format(tmp=tmp_path, closed=closed) for s in (uri, said))
    started = time.monotonic()
    result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert "invalid tracking URI" in result.stderr and said in " ".join(result.stderr.split()), result.stderr
    assert "secret" not in result.stderr
    assert files_under(tmp_path) == set()


def test_plain_postgresql_names_the_extra_and_the_driver_form(tmp_path):
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg  # noqa: F401 - SQLAlchemy's default PostgreSQL driver
    except ImportError:
        pass
    else:
        pytest.skip("psycopg is installed: postgresql:// has its driver")
    result = invoke("status", "--study", "tiny", "--tracking-uri", "postgresql://u@127.0.0.1/db", cwd=tmp_path)
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "studybench[postgres]" in text and "postgresql+psycopg2://u@127.0.0.1/db" in text


def test_an_http_server_that_is_not_mlflow_is_named_so(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=tmp_path)
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{uri} is not an MLflow tracking server" in " ".join(result.stderr.split()), result.stderr


def test_run_into_an_in_memory_store_trains_nothing_and_writes_nothing(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TINY_STUDY)
    result = invoke("run", str(study), "--tracking-uri", "sqlite:///:memory:", cwd=tmp_path)
    assert result.returncode == 2 and "in-memory database" in result.stderr, result.stdout + result.stderr
    assert files_under(tmp_path) == {"study.yaml"}


# --------------------------------------------------------------------------- study files
def test_a_control_character_in_a_study_names_its_line_and_column(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_bytes(b"study: tiny\nseeds: [0]\ndescription: a\x00b\n")
    result = invoke("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{study}: line 3, column 15: control character U+0000" in " ".join(result.stderr.split()), result.stderr


# --------------------------------------------------------------------------- the mistakes of a new user
ONE_RUN = (
    """\
study: edge
seeds: [0]
"""
    + SMALL_BASE
    + """\
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce]
reference:  # a note with a pipe and a line break: the Markdown tables must keep their columns
  - {method: ce, miou: 0.5, note: "R&D | 50% #1 \\\\ $x$\\nTable 2"}
"""
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """The study ``edge`` (ce and one ablation run) finished in ``root/results/mlflow.db``."""
    root = tmp_path_factory.mktemp("edge")
    study, uri = run_study(root, ONE_RUN + "ablations:\n  smooth: {of: ce, vary: {loss.label_smoothing: [0.1]}}\n")
    return {"root": root, "study": study, "uri": uri}


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_misspelt_method_is_reported_where_it_is_written(write_study):
    study = write_study(
        ONE_RUN.replace("method: [ce]", "method:\n    - ce\n    - rmii")
        + "ablations:\n  radius: {of: rmi, vary: {loss.radius: [1, 2]}}\n"
    )
    result = invoke("validate", str(study))
    assert result.returncode == 2
    assert "grid.method[1]: unknown loss 'rmii'; did you mean 'rmi'?" in flat(result.stderr), result.stderr


def test_a_run_without_a_dataset_axis_is_named_without_none(write_study):
    study = write_study(ONE_RUN.replace("method: [ce]", "method:\n    - {name: rmi, loss: {name: rmii}}"))
    result = invoke("validate", str(study))
    assert result.returncode == 2 and "[in run rmi]" in result.stderr and "None" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("only", "said"),
    [
        ("metod=rmi", "unknown key 'metod'; did you mean 'method'?; keys and values: arch: unet; dataset: synthetic;"),
        ("method=rmj", "no run has method=rmj; method is one of: ce"),
        ("seed=0,method=dice", "no run has method=dice; did you mean 'ce'?; method is one of: ce"),
        ("xyz", "no run name contains 'xyz'"),
    ],
)
def test_an_only_filter_that_matches_nothing_lists_the_keys_and_values(write_study, only, said):
    result = invoke("run", str(write_study(ONE_RUN)), "--only", only, "--dry-run")
    assert result.returncode == 2 and said in flat(result.stderr), result.stderr


def test_dataset_filter_matches_when_the_dataset_is_no_axis(write_study):
    result = invoke("run", str(write_study(ONE_RUN)), "--only", "dataset=synthetic", "--dry-run")
    assert result.returncode == 0 and "ce · unet · s0" in result.stdout, result.stdout + result.stderr


def test_status_of_an_unknown_study_lists_the_studies_of_the_store(finished):
    result = invoke("status", "--study", "nope", "--tracking-uri", finished["uri"], cwd=finished["root"])
    assert result.returncode == 2 and "studies in this store: edge" in flat(result.stderr), result.stderr


def test_report_before_run_exits_2_and_writes_nothing(finished, write_study):
    study = write_study(ONE_RUN.replace("study: edge", "study: later"))
    before = files_under(finished["root"])
    result = invoke("report", str(study), "--tracking-uri", finished["uri"], cwd=finished["root"])
    assert result.returncode == 2 and "run the study first" in flat(result.stderr), result.stderr
    assert files_under(finished["root"]) == before


def test_report_writes_to_results_reports_by_default_never_to_reports(finished):
    root = finished["root"]
    result = invoke("report", str(finished["study"]), "--tracking-uri", finished["uri"], cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "results" / "reports" / "edge" / "runs.csv").is_file() and not (root / "reports").exists()
    title = pdf_text(root / "results" / "reports" / "edge" / "ablation_smooth.pdf")
    assert "ablation smooth: mIoU against loss.label_smoothing" in title and "one seed: no interval" in title, title
    for page in ("README.md", "reference.md"):
        blocks = table_blocks((root / "results" / "reports" / "edge" / page).read_text())
        assert blocks and all(len({pipes(line) for line in block}) == 1 for block in blocks), page
    assert "R&D \\| 50%" in (root / "results" / "reports" / "edge" / "reference.md").read_text()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=finished["uri"])
    experiment = client.get_experiment_by_name("edge").experiment_id
    run_id = client.search_runs([experiment])[0].info.run_id
    url = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
    assert url in (root / "results" / "reports" / "edge" / "runs.md").read_text()
    assert f'<a href="{url}">open</a>' in (root / "results" / "reports" / "edge" / "index.html").read_text()
    assert "MLflow" not in (root / "results" / "reports" / "edge" / "runs.csv").read_text().splitlines()[0]
    again = invoke("report", str(finished["study"]), "--tracking-uri", finished["uri"], cwd=root)  # rewrites its own
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize(
    ("out", "said"),
    [
        (".", "holds the MLflow store"),
        ("results", "holds the MLflow store"),
        ("study.yaml", "a file, not a folder"),
        ("project", "holds README.md of something other than a report"),
        ("results/artifacts/mine", "is inside the store's artifacts"),
    ],
)
def test_report_refuses_a_folder_that_holds_the_store_or_other_files(finished, out, said):
    root = finished["root"]
    (root / "project").mkdir(exist_ok=True)
    (root / "project" / "README.md").write_text("the project's own\n")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    result = invoke("report", str(finished["study"]), "--tracking-uri", finished["uri"], "--out", out, cwd=root)
    assert result.returncode == 2 and said in flat(result.stderr), result.stdout + result.stderr
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # nothing written, not even the store
    assert (root / "project" / "README.md").read_text() == "the project's own\n"


def test_a_checkpoint_dir_that_is_a_file_exits_2_before_anything_is_written(tmp_path):
    (tmp_path / "study.yaml").write_text(ONE_RUN)
    (tmp_path / "afile").write_text("")
    result = invoke("run", "study.yaml", "--checkpoint-dir", "afile/sub", cwd=tmp_path)
    assert result.returncode == 2 and "afile is a file; --checkpoint-dir names a folder" in flat(result.stderr)
    assert files_under(tmp_path) == {"study.yaml", "afile"}


def test_an_ascii_console_gets_ascii_run_names_not_a_crash(finished):
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONWARNINGS": "ignore", "COLUMNS": "160"}
    argv = [sys.executable, "-m", "studybench.cli", "run", str(finished["study"]), "--tracking-uri", finished["uri"]]
    done = subprocess.run(argv, cwd=finished["root"], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"ce - unet - s0" in done.stdout and b"Traceback" not in done.stderr, done.stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a read-only mount")
def test_a_finished_study_on_a_read_only_store_has_nothing_to_do(finished):
    """A real process in its own mount namespace where the store's folder is mounted read-only (EROFS)."""
    results = finished["root"] / "results"
    command = f"{sys.executable} -m studybench.cli run {finished['study']} --tracking-uri {finished['uri']}"
    script = f"mount --bind {results} {results} && mount -o remount,ro,bind {results} && {command}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    if "mount" in done.stderr and "studybench" not in done.stdout + done.stderr:
        pytest.skip(f"no read-only mount here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "edge: all 2 runs already finished; nothing to do" in flat(done.stdout), done.stdout


def test_the_dataset_not_on_disk_message_keeps_its_instructions(write_study, tmp_path):
    study = write_study(
        ONE_RUN.replace(
            "data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}",
            f"data: {{dataset: voc2012, root: {tmp_path / 'no'}}}",
        )
    )
    result = invoke("validate", str(study))
    text = flat(result.stderr)
    assert result.returncode == 2 and "Point data.root" in text and "characters)" not in text, result.stderr


# --------------------------------------------------------------------------- names that become metric names or Markdown
@pytest.mark.parametrize("bad", ["<script>", "R&D | 50% #1 \\\\ $x$", "..", " padded", "a/b"])
def test_class_names_that_cannot_be_metric_names_are_refused_before_training(write_study, tmp_path, bad):
    data = f"data: {{dataset: folder, root: {tmp_path / 'data'}, options: {{classes: [bg, {json.dumps(bad)}]}}}}"
    study = write_study(
        ONE_RUN.replace(
            "data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}",
            data,
        )
    )
    result = invoke("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "folder: classes[1]: class name" in flat(result.stderr) and "cannot be a metric name" in result.stderr


def test_names_made_safe_for_files_and_markdown():
    import pandas as pd

    from studybench.names import file_stem, markdown_table

    assert file_stem("samples_x/../../../../escaped") == "samples_x_.._.._.._.._escaped"
    assert "/" not in file_stem("../a/b") and not file_stem("..").startswith(".")
    text = markdown_table(pd.DataFrame({"method | x": ["a | b", "c\nd"], "note": ["1", "2|3"]}))
    lines = text.splitlines()
    assert len(lines) == 4 and {pipes(line) for line in lines} == {3}, text
    assert "c d" in text and "a \\| b" in text


def pipes(line: str) -> int:
    """Column separators of a Markdown table row: pipes not escaped with a backslash."""
    return len(re.findall(r"(?<!\\)\|", line))


def table_blocks(text: str) -> list[list[str]]:
    """The Markdown tables of a page: runs of consecutive lines that start with a pipe."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("|"):
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


# --------------------------------------------------------------------------- costs on a loaded machine
def test_each_run_records_the_load_and_the_cpus_it_ran_with(finished):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=finished["uri"])
    run = client.search_runs([client.get_experiment_by_name("edge").experiment_id])[0]
    metrics = run.data.metrics
    assert metrics["cpus"] == len(os.sched_getaffinity(0))
    assert 0.0 <= metrics["load_start"] < 1000 and 0.0 <= metrics["load_end"] < 1000, metrics


def test_load_warnings_count_the_runs_whose_load_exceeded_their_cpus():
    import pandas as pd

    from studybench.report.machine_load import load_warnings

    frame = pd.DataFrame({"load_start": [0.5, 3.0, 1.0], "load_end": [1.0, 1.0, 7.5], "cpus": [2.0, 2.0, 4.0]})
    (warning,) = load_warnings(frame)
    assert warning.startswith("2 of 3 runs ran on a loaded machine (1-minute load average up to 7.5 on 4 CPUs")
    assert load_warnings(frame.assign(load_end=1.0, load_start=2.0)) == []  # equal to the CPUs is not above
    assert load_warnings(frame.drop(columns=["cpus", "load_start", "load_end"])) == []  # runs from before


def test_the_report_warns_when_the_runs_ran_on_a_loaded_machine(finished, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=finished["uri"])
    run = client.search_runs([client.get_experiment_by_name("edge").experiment_id])[0]
    client.log_metric(run.info.run_id, "load_end", run.data.metrics["cpus"] + 40.0)  # as a busy machine leaves it
    result = invoke(
        "report", str(finished["study"]), "--tracking-uri", finished["uri"], "--out", str(tmp_path / "r"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cpus = run.data.metrics["cpus"]  # the other run may have met a loaded machine too (this one is shared)
    assert f"of 2 runs ran on a loaded machine (1-minute load average up to {cpus + 40:.1f} on" in flat(result.stderr)
    assert "ran on a loaded machine" in (tmp_path / "r" / "README.md").read_text()


# --------------------------------------------------------------------------- cosmetics a new user sees
def test_losses_prints_plain_text_not_docstring_markup():
    result = invoke("losses")
    assert result.returncode == 0 and "lad: Locally adaptive loss" in result.stdout
    assert "``" not in result.stdout and ":func:" not in result.stdout, result.stdout


def test_the_readme_command_table_names_every_executor():
    readme = (REPO / "README.md").read_text()
    assert "[--executor local\\|ray\\|slurm]" in readme


def test_the_training_curves_legend_is_readable():
    import pandas as pd

    from studybench.report import plots

    runs = pd.DataFrame({"run_id": ["a", "b"], "method": ["ce", "dice"]})
    hist = pd.DataFrame(
        [(r, k, e, 0.5 + 0.1 * e) for r in ("a", "b") for k in ("train/loss", "val/miou") for e in range(2)],
        columns=["run_id", "key", "step", "value"],
    )
    fig = plots.curves(hist, runs, ["method"])
    sizes = {text.get_fontsize() for legend in fig.legends for text in legend.get_texts()}
    plots.plt.close(fig)
    assert sizes and min(sizes) >= 8, sizes


# --------------------------------------------------------------------------- the store's own disk full
@pytest.fixture
def tiny_store_disk(tmp_path):
    """A tmpfs holding an empty store and a few kB more (checkpoints live elsewhere)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to create a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_store_disk_is_one_message_per_run_and_a_rerun_finishes(tiny_store_disk, tmp_path):
    from studybench.store import StudyWriter

    uri = f"sqlite:///{tiny_store_disk / 'mlflow.db'}"
    StudyWriter(uri, "edge").ensure_experiment()
    used_kb = shutil.disk_usage(tiny_store_disk).used // 1024
    subprocess.run(["mount", "-o", f"remount,size={used_kb + 40}k", str(tiny_store_disk)], check=True)
    (tmp_path / "study.yaml").write_text(ONE_RUN.replace("method: [ce]", "method: [ce, dice]"))
    args = ("run", "study.yaml", "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ck"))
    full = run_cli(*args, cwd=tmp_path, timeout=300)  # a real process: MLflow's own log lines show too
    out = flat(full.stdout + full.stderr)
    assert full.returncode == 1, out
    assert f"no space left on {tiny_store_disk}" in out and "for the MLflow store" in out, out
    assert "Traceback" not in out and "autoflush" not in out, out
    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_store_disk)], check=True)
    again = invoke(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


# --------------------------------------------------------------------------- grids
def test_expanding_and_checking_a_large_grid_costs_milliseconds_per_run(write_study):
    """2,000 runs of one model (seeds x an lr axis): validation builds and checks each distinct part once
    (it cost ~27 ms a run when every run built its model: 271 s of CPU for the 10,000-run limit)."""
    from studybench.study.config import load_study
    from studybench.study.grid import expand

    lrs = ", ".join(f"{0.001 + i * 1e-5:.5f}" for i in range(40))
    study = write_study(
        ONE_RUN.replace("seeds: [0]", f"seeds: [{', '.join(map(str, range(50)))}]").replace(
            "method: [ce]", f"method: [ce]\n  train.lr: [{lrs}]"
        )
    )
    started = time.process_time()
    specs = expand(load_study(study), source=str(study))
    per_run_ms = 1000 * (time.process_time() - started) / len(specs)
    assert len(specs) == 2000 and per_run_ms < 8.0, per_run_ms  # imports and the one model build included


def pdf_text(path: Path) -> str:
    """The text strings drawn in a matplotlib PDF (its compressed content streams, joined)."""
    import zlib

    data, shown = path.read_bytes(), b""
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            shown += b"".join(re.findall(rb"\((.*?)\)", zlib.decompress(stream.group(1))))
        except zlib.error:
            continue
    return shown.decode("latin-1")
