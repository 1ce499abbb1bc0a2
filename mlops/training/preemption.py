"""Preemption: SIGTERM during training becomes a checkpoint and a clean, prompt exit.

Kubernetes (and a deployment's cancellation) stops a pod with SIGTERM, then SIGKILL after
its grace period. While ``preemptible`` is active, SIGTERM only asks the loop to stop at
the next batch boundary; the runner then saves a checkpoint and raises TrainingInterrupted,
so the retry (another worker, perhaps) resumes from that batch. Should no boundary come
within the grace period (a stuck write, say), the process exits anyway, before the SIGKILL,
and the retry resumes from the last checkpoint that was written. The handler is installed
only around training and the previous one restored after; the inference service imports
no torch (an import contract), hence never this.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)
DEFAULT_GRACE_S = 20.0  # below Kubernetes' default terminationGracePeriodSeconds (30 s)
OVERDUE_EXIT_CODE = 143  # what a process killed by SIGTERM reports (128 + 15)


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving its checkpoint; a retry resumes from it."""

    def __init__(self, epoch: int, checkpoint: str) -> None:
        super().__init__(f"training preempted (SIGTERM) at epoch {epoch}, checkpoint saved "
                         f"to {checkpoint}; run it again to resume from there")
        self.epoch = epoch
        self.checkpoint = checkpoint


class StopRequest:
    """Whether SIGTERM arrived; ``requested`` is what the loop polls between batches."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.received_at: float | None = None
        self._watchdog: threading.Timer | None = None

    def requested(self) -> bool:
        return self.received_at is not None

    def receive(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: note the request and start the grace period's watchdog."""
        if self.received_at is not None:
            return
        self.received_at = time.monotonic()
        log.warning("SIGTERM: stopping at the next batch to checkpoint (grace period %.0f s)",
                    self.grace_s)
        self._watchdog = threading.Timer(self.grace_s, _overdue, args=(self.grace_s,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def cancel(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()


def _overdue(grace_s: float) -> None:
    # Runs on the watchdog thread: the main thread is stuck, so no exception can reach it.
    log.error("no checkpoint within the %.0f s grace period after SIGTERM: exiting; a retry "
              "resumes from the last checkpoint written", grace_s)
    logging.shutdown()
    os._exit(OVERDUE_EXIT_CODE)


@contextmanager
def preemptible(grace_s: float = DEFAULT_GRACE_S) -> Iterator[StopRequest]:
    """Turn SIGTERM into a StopRequest while the block runs; restore the previous handler
    after. Off the main thread (where Python cannot install handlers) nothing is installed
    and the request is never made."""
    if grace_s <= 0:
        raise ValueError(f"grace period must be > 0 s, got {grace_s}")
    request = StopRequest(grace_s)
    if threading.current_thread() is not threading.main_thread():
        log.debug("not on the main thread: SIGTERM keeps its handler during training")
        yield request
        return
    previous = signal.signal(signal.SIGTERM, request.receive)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous)
        request.cancel()
