"""A run outlives the worker that started it only as an orphan: nobody reads its output,
can cancel it or reports its end, and it holds its slot while it lives (a run that went
on to hang, a Dask cluster that never closed, was stuck for the rest of a chaos run).

``end_with_parent`` watches the process's parent (the worker) from a daemon thread and,
once it is gone, sends the process SIGTERM: training saves a checkpoint and stops
(``mlops.training.preemption``), any other stage ends "aborted by a termination signal",
and the fair-share controller requeues the run (``infra.crash_requeue``), which resumes on
the worker the supervisor restarted.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)
WATCH_S = 2.0
_watching: set[int] = set()  # the processes that started a watch (one each)


def end_with_parent(watch_s: float = WATCH_S) -> bool:
    """Start the watch (once per process); False when there is no parent to watch."""
    parent = os.getppid()
    if parent <= 1 or os.getpid() in _watching:
        return False
    _watching.add(os.getpid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(watch_s)
        log.error("the worker that started this run (pid %d) is gone: ending the run so "
                  "that it can be requeued", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
    return True
