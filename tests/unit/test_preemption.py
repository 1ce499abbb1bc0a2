"""SIGTERM during training: the handler asks the loop to stop, and a loop that never reaches
its next batch (a stuck write) is ended by the grace period's watchdog before the SIGKILL
that would follow, with the exit code a SIGTERM gives."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops.training.preemption import OVERDUE_EXIT_CODE, preemptible

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 1.0
# A training step stuck for far longer than the grace period.
STUCK = f"""
import time
from mlops.training.preemption import preemptible
with preemptible({GRACE_S}) as request:
    print("training", flush=True)
    time.sleep(120)
print("the watchdog did not fire", flush=True)
"""


def test_a_loop_stuck_past_the_grace_period_is_ended_by_the_watchdog() -> None:
    process = subprocess.Popen([sys.executable, "-c", STUCK], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == "training\n"
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert process.returncode == OVERDUE_EXIT_CODE, (stdout, stderr)
    assert GRACE_S <= waited < GRACE_S + 20, waited  # not before the grace period ends
    assert "no checkpoint within the 1 s grace period after SIGTERM" in stderr, stderr
    assert "did not fire" not in stdout


def test_sigterm_becomes_a_request_and_the_previous_handler_returns() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with preemptible(30.0) as request:
        assert not request.requested()
        signal.raise_signal(signal.SIGTERM)
        assert request.requested()  # the process lives on, asked to stop at the next batch
    assert signal.getsignal(signal.SIGTERM) is before
    watchdog = request._watchdog  # started by the signal, cancelled with the block
    assert watchdog is not None
    watchdog.join(timeout=5)
    assert not watchdog.is_alive()


def test_a_grace_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="grace period must be > 0 s"):
        with preemptible(0):
            pass
