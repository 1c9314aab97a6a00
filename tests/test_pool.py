"""The local pool's GPU spread: each worker claims its own index, without multiprocessing's private state;
a worker ends with the driver it watches (the processes themselves: tests/test_pool_workers.py)."""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context

from helpers import REPO

from studybench.executors import pool


def test_workers_claim_distinct_slots_in_start_order_even_at_once():
    slots = get_context("spawn").Value("i", 0)
    assert [pool.claim_slot(slots) for _ in range(3)] == [0, 1, 2]
    with ThreadPoolExecutor(8) as threads:  # eight claims racing on the shared counter
        claimed = list(threads.map(lambda _: pool.claim_slot(slots), range(64)))
    assert sorted(claimed) == list(range(3, 67))


def test_slots_map_round_robin_onto_the_gpus_and_one_gpu_is_left_alone():
    assert [pool.gpu_for(slot, 2) for slot in range(5)] == [0, 1, 0, 1, 0]
    assert [pool.gpu_for(slot, 3) for slot in range(4)] == [0, 1, 2, 0]
    assert pool.gpu_for(5, 1) is None and pool.gpu_for(0, 0) is None


def test_the_pool_reads_no_private_multiprocessing_attribute():
    source = inspect.getsource(pool)
    assert "_identity" not in source and "current_process()._" not in source


def _watcher(pid: int) -> subprocess.Popen:
    """A process that arms ``die_with(pid)``, says so, then would sleep for a minute."""
    code = f"import time; from studybench.executors.server import die_with; die_with({pid}); print('armed', flush=True); time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)


def test_die_with_ends_the_process_when_the_watched_one_ends_or_had_ended_already():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    late = _watcher(gone.pid)  # dead before the call: killed at once, never armed
    assert late.wait(timeout=30) == -signal.SIGKILL and late.stdout.read() == ""
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = _watcher(driver.pid)
    try:
        assert watcher.stdout.readline().strip() == "armed"
        assert watcher.poll() is None
        driver.kill()
        driver.wait()
        assert watcher.wait(timeout=5) == -signal.SIGKILL
    finally:
        for proc in (driver, watcher):
            if proc.poll() is None:
                proc.kill()
