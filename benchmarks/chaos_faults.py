"""The chaos benchmark's faults: a seeded schedule, and each fault injected into a running
stack with the times the platform took to detect it and to recover from it.

- ``worker``: SIGKILL the gpu pool's worker process (its runs' processes live on). Detected:
  its supervisor counts the restart; recovered: a new worker process runs.
- ``node``: SIGKILL the gpu worker and its run processes while a run is RUNNING (a lost
  node). Detected: the zombie automation marks the run Crashed (no heartbeat); recovered:
  that, and a new worker process runs. Without a RUNNING run it is a ``worker`` fault.
- ``service``: SIGKILL the inference service's process. Detected: its supervisor counts
  the restart; recovered: ``/v2/health/ready`` answers 200. The window from the kill to the
  recovery is when requests may fail.
- ``controller``: SIGKILL the fair-share controller. Detected: its supervisor counts the
  restart (having put the queues' limits back to the guarantees); recovered: its
  ``/metrics`` answers again.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.chaos_stack import Stack, descendants
from infra.automations import HEARTBEAT_S, ZOMBIE_AFTER_S
from mlops.processes import supervisor_state_path
from mlops.supervisor import SupervisedState, read_state

KINDS = ("worker", "node", "service", "controller")
WATCH_S = 300.0  # a fault not recovered by then counts as never recovered
NODE_DETECT_S = ZOMBIE_AFTER_S + HEARTBEAT_S + 30  # as tests/e2e/test_faults.py bounds it
# Per kind: most seconds to detect, most to recover.
BOUNDS_S = {"worker": (10.0, 60.0), "node": (NODE_DETECT_S, NODE_DETECT_S + 30),
            "service": (10.0, 120.0), "controller": (10.0, 60.0)}


@dataclass
class Fault:
    """One injected fault; ``detected_s``/``recovered_s`` from the kill, None: not (yet)."""

    kind: str
    at_s: float  # when the schedule wanted it, from the start of the chaos
    killed_at: float = 0.0  # time.monotonic()
    detected_s: float | None = None
    recovered_s: float | None = None
    note: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def window(self) -> tuple[float, float]:
        """When it was down (monotonic): the kill to the recovery (or the watch's end)."""
        return self.killed_at, self.killed_at + (self.recovered_s or WATCH_S)


def schedule(seed: int, seconds: float, quick: bool) -> list[Fault]:
    """Faults at seeded times: quick, a worker kill then a service kill; else about one a
    minute, each kind in turn in a seeded order, the last one a minute before the end."""
    rng = random.Random(seed)
    if quick:
        return [Fault("worker", 20.0), Fault("service", 50.0)]
    count = max(len(KINDS), round(seconds / 60))
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    span = (seconds - 60.0) / count
    return [Fault(kind, 15.0 + i * span + rng.uniform(0, span * 0.5))
            for i, kind in enumerate(kinds)]


@dataclass
class Victims:
    """Where each fault finds its process, and how recovery is seen."""

    stack: Stack
    service_pid: Path  # the inference service's pid file
    service_url: str
    running_run: Callable[[], str | None]  # a RUNNING run's id, if there is one
    run_state: Callable[[str], str]  # a run's state type

    def state(self, kind: str) -> SupervisedState:
        if kind == "service":
            return read_state(supervisor_state_path(self.service_pid)) or SupervisedState("")
        name = "fairshare-controller" if kind == "controller" else "worker-gpu"
        return self.stack.supervised(name)


def inject(fault: Fault, victims: Victims) -> None:
    """Kill the fault's process now; a thread watches for its detection and recovery."""
    before = victims.state(fault.kind)
    run = victims.running_run() if fault.kind == "node" else None
    if fault.kind == "node" and run is None:
        fault.kind, fault.note = "worker", "no RUNNING run: worker only"
    doomed = [before.pid] if before.pid else []
    if run is not None and before.pid:
        doomed += descendants(before.pid)
        fault.note = f"run {run[:8]} and {len(doomed) - 1} processes"
    fault.killed_at = time.monotonic()
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not doomed:
        fault.note = "nothing to kill"
        fault.done.set()
        return
    threading.Thread(target=_watch, args=(fault, victims, before, run), daemon=True).start()


def _watch(fault: Fault, victims: Victims, before: SupervisedState, run: str | None) -> None:
    deadline = fault.killed_at + WATCH_S
    while time.monotonic() < deadline and fault.recovered_s is None:
        now = time.monotonic() - fault.killed_at
        state = victims.state(fault.kind)
        restarted = state.restarts > before.restarts
        if fault.detected_s is None and _detected(fault, victims, restarted, run):
            fault.detected_s = now
        if fault.detected_s is not None and _recovered(fault, victims, state, before, run):
            fault.recovered_s = now
        time.sleep(0.25)
    fault.done.set()


def _detected(fault: Fault, victims: Victims, restarted: bool, run: str | None) -> bool:
    if run is not None:
        return victims.run_state(run) == "CRASHED"
    return restarted


def _recovered(fault: Fault, victims: Victims, state: SupervisedState,
               before: SupervisedState, run: str | None) -> bool:
    back = bool(state.pid) and state.pid != before.pid and _alive(state.pid)
    if fault.kind == "service":
        return back and _answers(f"{victims.service_url}/v2/health/ready")
    if fault.kind == "controller":
        port = victims.stack.env["MLOPS_FAIRSHARE_PORT"]
        return back and _answers(f"http://127.0.0.1:{port}/metrics")
    return back


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid or 0, 0)
    except OSError:
        return False
    return bool(pid)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
