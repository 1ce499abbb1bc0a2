"""The chaos benchmark's faults: a seeded schedule, and each fault injected into a running
stack with the times the platform took to detect it and to recover from it.

- ``worker``: SIGKILL the gpu pool's worker process (its runs' processes live on). Detected:
  its supervisor counts the restart; recovered: a new worker process runs.
- ``node``: SIGKILL the gpu worker and its run processes while one of its runs is RUNNING
  (a lost node). Detected: the zombie automation marks the run Crashed (no heartbeat); recovered:
  that, and a new worker process runs. Without a RUNNING run it is a ``worker`` fault.
- ``service``: SIGKILL the inference service's process. Detected: its supervisor counts
  the restart; recovered: ``/v2/health/ready`` answers 200. The window from the kill to the
  recovery is when requests may fail.
- ``controller``: SIGKILL the fair-share controller. Detected: its supervisor counts the
  restart (having put the queues' limits back to the guarantees); recovered: its
  ``/metrics`` answers again.
- ``redis``: restart the online store's Redis (stopped, ``REDIS_PAUSE_S``, started again on
  its port and folder). Detected: the inference service's predict-by-entity answers 503;
  recovered: Redis answers with the data it had, and predict-by-entity answers 200 with
  the predictions of before (``chaos_outages.RedisRestart``).
- ``object-store``: the object store away for a seeded window (``WINDOW_S``; moto keeps its
  data). Detected: an object cannot be read through the proxy; recovered: it can
  (``chaos_outages.ObjectStoreWindow``). Runs that need S3 meanwhile retry, then fail
  naming the endpoint.

The process kills count both times from the kill. An outage's service is away for a time
the schedule chose, so its recovery counts from when the service came back: the time the
platform took to be whole again.
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

from benchmarks.chaos_outages import ObjectStoreWindow, RedisRestart
from benchmarks.chaos_services import BUCKET
from benchmarks.chaos_stack import Stack, descendants, flow_runs
from infra.automations import HEARTBEAT_S, ZOMBIE_AFTER_S
from mlops.processes import supervisor_state_path
from mlops.supervisor import SupervisedState, read_state

KINDS = ("worker", "node", "service", "controller", "redis", "object-store")
OUTAGES = ("redis", "object-store")
WATCH_S = 300.0  # a fault not recovered by then counts as never recovered
NODE_DETECT_S = ZOMBIE_AFTER_S + HEARTBEAT_S + 30  # as tests/e2e/test_faults.py bounds it
REDIS_PAUSE_S = 10.0  # longer than the online store's client takes to give up (its retries)
WINDOW_S = (30.0, 45.0)  # the object store's outage, seeded within these (quick: 10 s)
# Per kind: most seconds to detect, most to recover (an outage's: from the service's return).
BOUNDS_S = {"worker": (10.0, 60.0), "node": (NODE_DETECT_S, NODE_DETECT_S + 30),
            "service": (10.0, 120.0), "controller": (10.0, 60.0),
            "redis": (REDIS_PAUSE_S, 30.0), "object-store": (10.0, 30.0)}


@dataclass
class Fault:
    """One injected fault; ``detected_s`` from the kill (or the outage's start),
    ``recovered_s`` from the kill (or the service's return); None: not (yet)."""

    kind: str
    at_s: float  # when the schedule wanted it, from the start of the chaos
    down_s: float = 0.0  # an outage: how long its service stays away
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
    """Faults at seeded times: quick, a worker kill, a short object-store window, a service
    kill and a Redis restart; else about one a minute, each kind in turn in a seeded
    order, the last one a minute before the end, none while Redis or S3 is away."""
    rng = random.Random(seed)
    if quick:
        return [Fault("worker", 15.0), Fault("object-store", 25.0, 10.0),
                Fault("service", 40.0), Fault("redis", 55.0, REDIS_PAUSE_S)]
    count = max(len(KINDS), round(seconds / 60))
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    downs = [rng.uniform(*WINDOW_S) if kind == "object-store" else
             REDIS_PAUSE_S if kind == "redis" else 0.0 for kind in kinds]
    span = (seconds - 60.0 - sum(downs)) / count
    return [Fault(kind, 15.0 + i * span + sum(downs[:i]) + rng.uniform(0, span * 0.5), down)
            for i, (kind, down) in enumerate(zip(kinds, downs, strict=True))]


@dataclass
class Victims:
    """Where each fault finds its process, and how recovery is seen."""

    stack: Stack
    service_pid: Path  # the inference service's pid file
    service_url: str
    running_run: Callable[[list[str]], str | None]  # one of these runs that is RUNNING
    run_state: Callable[[str], str]  # a run's state type

    def state(self, kind: str) -> SupervisedState:
        if kind == "service":
            return read_state(supervisor_state_path(self.service_pid)) or SupervisedState("")
        name = "fairshare-controller" if kind == "controller" else "worker-gpu"
        return self.stack.supervised(name)


def inject(fault: Fault, victims: Victims) -> None:
    """Kill the fault's process now, or start its outage; a thread watches for its detection
    and recovery."""
    if fault.kind in OUTAGES:
        threading.Thread(target=_outage, args=(fault, victims), daemon=True).start()
        return
    before = victims.state(fault.kind)
    doomed = [before.pid] if before.pid else []
    # The node's run must be one this worker runs: a run orphaned by an earlier worker kill
    # lives on outside the worker's process tree, and killing the tree would not touch it.
    children = descendants(before.pid) if fault.kind == "node" and before.pid else []
    run = victims.running_run(flow_runs(children)) if children else None
    if fault.kind == "node" and run is None:
        fault.kind, fault.note = "worker", "no RUNNING run on the worker: worker only"
    if run is not None:
        doomed += children
        fault.note = f"run {run[:8]} and {len(children)} processes"
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


def _outage(fault: Fault, victims: Victims) -> None:
    """Take the service away for ``fault.down_s``, watching for the outage to be seen, then
    bring it back and watch for the platform to be whole again."""
    services = victims.stack.services
    outage = (RedisRestart(services.redis, victims.service_url) if fault.kind == "redis"
              else ObjectStoreWindow(services.proxy, BUCKET))
    away = False
    try:
        outage.prepare()
        fault.killed_at, away = time.monotonic(), True
        outage.take_away()
        while time.monotonic() < fault.killed_at + fault.down_s:
            if fault.detected_s is None and outage.seen():
                fault.detected_s = time.monotonic() - fault.killed_at
            time.sleep(0.25)
    except Exception as exc:  # the fault counts as undetected and unrecovered
        fault.note = f"outage failed: {exc}"
    try:
        if not away:
            return
        outage.bring_back()  # even after a failure: the platform needs its service
        back = time.monotonic()
        while fault.recovered_s is None and time.monotonic() < back + WATCH_S:
            if outage.whole():
                fault.recovered_s = time.monotonic() - back
            else:
                time.sleep(0.25)
        fault.note = fault.note or f"away {back - fault.killed_at:.0f} s"
        if fault.recovered_s is None:
            fault.note += f", never whole: {outage.why[:160]}"
    except Exception as exc:
        fault.note = f"{fault.note} not back: {exc}".strip()
    finally:
        fault.done.set()
