"""A run whose worker died ends itself: a real parent process (the worker) starts a child
(the run) that watches it; the parent is killed with SIGKILL, the child gets SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
RUN = """
import sys, time
from mlops.orphans import end_with_parent
assert end_with_parent(0.1) and not end_with_parent(0.1)  # one watch per process
print("watching", flush=True)
time.sleep(float(sys.argv[1]))
"""
# The worker: starts the run in a session of its own, as Prefect's process worker does,
# says its pid, then lives until it is killed.
WORKER = """
import subprocess, sys, time
run = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                       start_new_session=True, stdout=subprocess.PIPE, text=True)
assert run.stdout.readline() == "watching\\n"
print(run.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _worker(seconds: float) -> tuple[subprocess.Popen, int]:
    worker = subprocess.Popen([sys.executable, "-c", WORKER, RUN, str(seconds)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    return worker, int(worker.stdout.readline())


def test_a_run_ends_when_its_worker_dies() -> None:
    worker, run = _worker(60)
    try:
        time.sleep(0.5)
        assert _alive(run)  # its worker lives: the run goes on
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not _alive(run), 10, "the orphaned run ended")
        assert time.monotonic() - killed < 10
    finally:
        worker.kill()
        worker.wait()
        if _alive(run):
            os.kill(run, signal.SIGKILL)

