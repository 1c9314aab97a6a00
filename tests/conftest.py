"""Shared fixtures: a temporary MLflow store and a writer of small study files."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY_STUDY, run_cli  # noqa: F401 - re-exported for tests that import conftest

torch.set_num_threads(1)  # tests run beside each other on 2 cores
# pytest-xdist's workers get COLUMNS=80 and LINES=24: the CLI under test would wrap its tables
# and messages at 80 columns there and at its log width (160) in a plain pytest run
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study YAML (dedented text) into tmp_path and return its path."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


#: The longest test files (seconds of wall time measured in a full run on 2 cores), started first: pytest-xdist
#: hands files out in collection order, and a long file that starts last keeps its worker busy alone.
LONG_FILES = (
    "test_slurm.py",  # ~150, mostly waiting for Slurm
    "test_scaleout.py",  # ~140
    "test_concurrency.py",  # ~60
    "test_ray_loopback.py",  # ~60
    "test_end_to_end.py",  # ~55 (make demo in a fresh clone)
    "test_postgres.py",  # ~40
    "test_server_lifetime.py",  # ~40
    "test_red_team_manifests.py",  # ~70 on a loaded machine (one training, then ~70 status calls)
    "test_red_team_cache.py",  # ~60 on a loaded machine (MLflow migrations in real child processes)
    "test_edges_user.py",  # ~80 on a loaded machine (one training, a full tmpfs, read-only and ASCII processes)
    "test_report.py",  # ~30
    "test_store.py",  # ~30
)


#: The fast tier (``make test-fast``: unit and contract tests, about a minute on 2 cores): every test outside
#: these files is marked ``slow`` (it trains, starts processes or servers, or compiles kernels), so a new test
#: file is in the full suite only until it is measured and listed here. Seconds: one process, loaded machine.
FAST_FILES = (
    "test_across.py",  # 2
    "test_bad_input.py",  # 20: exit 2 and the message for every kind of bad input
    "test_center.py",
    "test_config.py",
    "test_datasets.py",  # 3
    "test_discover.py",
    "test_evidence.py",  # 11
    "test_focal.py",
    "test_grid.py",  # 2
    "test_images_bootstrap.py",  # 9: ~5 s, most of it the coverage simulation
    "test_keys.py",
    "test_seed_sources.py",  # 6: seeds by source, expanded and checked without training
    "test_variance.py",  # the variance-by-source estimator by simulation (its trained study is marked slow)
    "test_layers.py",
    "test_losses_contract.py",
    "test_measure.py",  # 2
    "test_metrics.py",
    "test_phases.py",  # 1
    "test_pool.py",
    "test_ranking.py",  # 4
    "test_report_tuning.py",
    "test_rmi.py",  # 30
    "test_smp_version.py",
    "test_source.py",  # 15: listings read from source agree with importing (imports torch and smp)
    "test_stats.py",  # 7
    "test_store_names.py",
    "test_synthetic.py",
    "test_train.py",  # 5
    "test_tuning.py",  # 3
    "test_typed_params.py",
    "test_validate_once.py",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name not in FAST_FILES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
