"""Discrete-event simulation of one shared work pool under the fair-share policy and baselines.

Why: the policy in ``mlops/fairshare/policy.py`` is a pure function; whether it keeps a pool
busy, shares it by weight and gives a team its quota back quickly depends on how it is driven
(a tick every few seconds, queue limits in between). This module replays a workload trace
through the same ``plan_pool`` the controller calls and through what the platform had
before, so the scores (``scores``) compare like with like.

What each scheduler does, as Prefect would (runs start in queue-priority order, oldest first
within a queue, while the queue holds fewer runs than its limit and the pool fewer than its
capacity; queue priority follows the team order given, best first, and high, normal, low
within a team, as ``mlops/fairshare/plan.py`` provisions them):

- ``fair-share``: three queues per team; every ``period_s`` (from time 0) the controller sees
  only the running runs (team, priority, start time) and queued counts per queue, calls
  ``plan_pool`` and sets the queue limits; between ticks the limits stand.
- ``fair-share+preemption``: the same with ``preemption=True``: victims stop, lose the work
  since their last checkpoint and go back to the front of their queue.
- ``static-limits``: one queue per team, limit = quota (no borrowing).
- ``fifo``: one queue for everyone, the pool's capacity only.
- ``strict-priority``: one queue per team, no queue limits; the best-ranked team first.

Events at the same instant are handled together: finishes, then arrivals, then the tick,
then the starts. Deterministic: no clock, no randomness except ``bursty_trace``'s seeded one.
Not modelled (each delays every scheduler's starts, or the controller's reclaim, in a real
pool): the worker's poll interval and the time a process takes to start, or to stop once
cancelled. The real controller also requeues a preempted run at its original place (a copy
scheduled at the original's time, and Prefect starts a queue's oldest runs first).

Optional ``nodes`` (a ``NodeModel``, e.g. ``nodes.NodePool``): the slots are the GPUs of
nodes that boot, go idle and are reclaimed; the model says where a run may start, what
capacity the controller plans with, and handles its own events (between arrivals and the
tick at the same instant). Without it, the pool has ``capacity`` slots throughout.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mlops.fairshare.policy import PRIORITIES, RunningRun, TeamPolicy, plan_pool

SCHEDULERS = ("fair-share", "fair-share+preemption", "static-limits", "fifo", "strict-priority")
_FINISH, _ARRIVAL, _NODE, _TICK = 0, 1, 2, 3  # order of events at the same instant
Queue = tuple[str, str]  # (team or "*", priority or "*")


@dataclass(frozen=True)
class Job:
    """One run of the trace: it needs one slot for ``duration`` seconds of work."""

    id: str
    team: str
    arrival: float
    duration: float
    priority: str = "normal"


@dataclass
class _Attempt:
    """A job's mutable state while simulated."""

    job: Job
    remaining: float
    started: float | None = None  # start of the current attempt
    first_start: float | None = None
    kept: float = 0.0  # work saved by checkpoints of preempted attempts
    lost: float = 0.0  # work done since the last checkpoint when preempted
    generation: int = 0  # bumped on preemption: a stale finish event is ignored
    finished: float | None = None

    def elapsed(self, time: float) -> float:
        """Seconds the current attempt has run at ``time`` (0 when not running)."""
        return 0.0 if self.started is None else time - self.started


@dataclass(frozen=True)
class SimResult:
    """One scheduler's run: per-team running and queued counts after every event instant
    (constant until the next sample), and per-job outcomes."""

    scheduler: str
    capacity: int
    teams: tuple[TeamPolicy, ...]
    period_s: float
    jobs: tuple[Job, ...]
    times: list[float]
    running: dict[str, list[int]]
    queued: dict[str, list[int]]
    first_start: dict[str, float]
    finish: dict[str, float]
    work_done: dict[str, float]  # checkpointed work plus the final attempt's: its duration
    lost_s: dict[str, float]  # per job: work redone after preemptions
    preemptions: int = 0
    ticks: int = 0


class NodeModel(Protocol):
    """The pool's slots when they are nodes that come and go (see the module docstring)."""

    def bind(self, pool: _Pool) -> None:
        """Before the first event: the pool to push ``_NODE`` events to and stop runs on."""

    def room(self) -> bool:
        """Whether a slot can take a new run now."""

    def place(self, time: float, attempt: _Attempt) -> None:
        """A run started: put it on a slot."""

    def release(self, time: float, attempt: _Attempt) -> None:
        """A run finished or was stopped: free its slot."""

    def policy_view(self, teams: tuple[TeamPolicy, ...]) -> tuple[int, Sequence[TeamPolicy]]:
        """The capacity and team terms the controller plans with now."""

    def handle(self, time: float, number: int) -> None:
        """One of the model's own events."""

    def settle(self, time: float) -> None:
        """After an instant's starts: react to what still waits (e.g. scale out)."""


def queue_layout(scheduler: str, teams: Sequence[TeamPolicy]
                 ) -> tuple[list[Queue], dict[Queue, int | None]]:
    """The queues a scheduler uses, in the order Prefect serves them, and their limits
    (None: no limit; the fair-share limits are set at every tick)."""
    if scheduler in ("fair-share", "fair-share+preemption"):
        order = [(t.name, p) for t in teams for p in PRIORITIES]
        return order, {queue: 0 for queue in order}
    if scheduler == "static-limits":
        return [(t.name, "*") for t in teams], {(t.name, "*"): t.quota for t in teams}
    if scheduler == "strict-priority":
        return [(t.name, "*") for t in teams], {(t.name, "*"): None for t in teams}
    if scheduler == "fifo":
        return [("*", "*")], {("*", "*"): None}
    raise ValueError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULERS)}")


def _queue_of(scheduler: str, job: Job) -> Queue:
    if scheduler.startswith("fair-share"):
        return (job.team, job.priority)
    return ("*", "*") if scheduler == "fifo" else (job.team, "*")


class _Pool:
    """The simulation's state and its event handlers."""

    def __init__(self, scheduler: str, capacity: int, teams: Sequence[TeamPolicy],
                 period_s: float, checkpoint_s: float | None,
                 nodes: NodeModel | None = None) -> None:
        self.scheduler, self.capacity, self.teams = scheduler, capacity, tuple(teams)
        self.nodes = nodes
        self.period_s, self.checkpoint_s = period_s, checkpoint_s
        self.order, self.limits = queue_layout(scheduler, teams)
        self.queues: dict[Queue, deque[_Attempt]] = {queue: deque() for queue in self.order}
        self.running: dict[str, _Attempt] = {}
        self.in_queue = {queue: 0 for queue in self.order}  # running runs per queue
        # (time, kind, sequence, attempt or None, generation or tick number)
        self.events: list[tuple[float, int, int, _Attempt | None, int]] = []
        self.seq = 0
        self.attempts: dict[str, _Attempt] = {}
        self.preemptions = self.ticks = self.pending = 0  # pending: arrivals to come

    def push(self, time: float, kind: int, attempt: _Attempt | None, number: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (time, kind, self.seq, attempt, number))

    def arrive(self, attempt: _Attempt) -> None:
        self.pending -= 1
        self.queues[_queue_of(self.scheduler, attempt.job)].append(attempt)

    def finish(self, time: float, attempt: _Attempt, generation: int) -> None:
        if attempt.generation != generation or attempt.job.id not in self.running:
            return  # preempted since this finish was planned
        del self.running[attempt.job.id]
        self.in_queue[_queue_of(self.scheduler, attempt.job)] -= 1
        if self.nodes is not None:
            self.nodes.release(time, attempt)
        attempt.kept += attempt.elapsed(time)
        attempt.remaining = 0.0
        attempt.finished = time

    def start_runs(self, time: float) -> None:
        """What Prefect's worker does: queues in priority order, oldest run first."""
        for queue in self.order:
            waiting, limit = self.queues[queue], self.limits[queue]
            while waiting and self.room() and (
                    limit is None or self.in_queue[queue] < limit):
                attempt = waiting.popleft()
                attempt.started = time
                if attempt.first_start is None:
                    attempt.first_start = time
                self.running[attempt.job.id] = attempt
                self.in_queue[queue] += 1
                if self.nodes is not None:
                    self.nodes.place(time, attempt)
                self.push(time + attempt.remaining, _FINISH, attempt, attempt.generation)
        if self.nodes is not None:
            self.nodes.settle(time)

    def room(self) -> bool:
        if self.nodes is None:
            return len(self.running) < self.capacity
        return self.nodes.room()

    def tick(self, time: float) -> None:
        """The controller: observe running runs and queued counts, set limits, preempt."""
        self.ticks += 1
        running = [RunningRun(a.job.id, a.job.team, time - a.elapsed(time), a.job.priority)
                   for a in self.running.values()]
        queued = {t.name: {p: len(self.queues[(t.name, p)]) for p in PRIORITIES}
                  for t in self.teams}
        capacity, teams = ((self.capacity, self.teams) if self.nodes is None
                           else self.nodes.policy_view(self.teams))
        plan = plan_pool(capacity, teams, running, queued,
                         preemption=self.scheduler == "fair-share+preemption")
        for team, by_priority in plan.queue_limits.items():
            for priority, limit in by_priority.items():
                self.limits[(team, priority)] = limit
        victims = [self.running[run.id] for run in plan.preempt]
        for attempt in sorted(victims, key=lambda a: (a.job.arrival, a.job.id), reverse=True):
            self.preempt(time, attempt)

    def preempt(self, time: float, attempt: _Attempt) -> None:
        """The controller's victim: stopped (``stop``) and counted as a preemption."""
        self.stop(time, attempt)
        self.preemptions += 1

    def stop(self, time: float, attempt: _Attempt) -> None:
        """Stop a run; it keeps the work up to its last checkpoint and waits at the front."""
        done = attempt.elapsed(time)
        step = self.checkpoint_s
        saved = math.floor(done / step) * step if step else 0.0
        attempt.kept += saved
        attempt.lost += done - saved
        attempt.remaining -= saved
        attempt.generation += 1
        attempt.started = None
        queue = _queue_of(self.scheduler, attempt.job)
        del self.running[attempt.job.id]
        self.in_queue[queue] -= 1
        if self.nodes is not None:
            self.nodes.release(time, attempt)
        self.queues[queue].appendleft(attempt)

    def busy(self) -> bool:
        return bool(self.running or self.pending or any(self.queues.values()))


def simulate(capacity: int, teams: Sequence[TeamPolicy], trace: Sequence[Job], scheduler: str,
             period_s: float = 10.0, checkpoint_s: float | None = 60.0,
             nodes: NodeModel | None = None) -> SimResult:
    """Replay ``trace`` through one scheduler until every job has finished (and, with
    ``nodes``, every node event has passed)."""
    _check_trace(teams, trace)
    pool = _Pool(scheduler, capacity, teams, period_s, checkpoint_s, nodes)
    if nodes is not None:
        nodes.bind(pool)
    for job in sorted(trace, key=lambda j: (j.arrival, j.id)):
        pool.attempts[job.id] = _Attempt(job, job.duration)
        pool.push(job.arrival, _ARRIVAL, pool.attempts[job.id])
        pool.pending += 1
    if scheduler.startswith("fair-share"):
        pool.push(0.0, _TICK, None, 0)
    names = [t.name for t in teams]
    times: list[float] = []
    running: dict[str, list[int]] = {name: [] for name in names}
    queued: dict[str, list[int]] = {name: [] for name in names}
    while pool.events:
        now = pool.events[0][0]
        while pool.events and pool.events[0][0] == now:
            _, kind, _, attempt, number = heapq.heappop(pool.events)
            _handle(pool, now, kind, attempt, number)
        pool.start_runs(now)
        times.append(now)
        _sample(pool, running, queued)
    return _result(pool, trace, times, running, queued)


def _handle(pool: _Pool, now: float, kind: int, attempt: _Attempt | None, number: int) -> None:
    if kind == _FINISH and attempt is not None:
        pool.finish(now, attempt, number)
    elif kind == _ARRIVAL and attempt is not None:
        pool.arrive(attempt)
    elif kind == _NODE and pool.nodes is not None:
        pool.nodes.handle(now, number)
    elif kind == _TICK:
        pool.tick(now)
        if pool.busy():  # tick times are multiples of the period: no drift
            pool.push(pool.period_s * (number + 1), _TICK, None, number + 1)


def _sample(pool: _Pool, running: dict[str, list[int]], queued: dict[str, list[int]]) -> None:
    held = {name: 0 for name in running}
    for attempt in pool.running.values():
        held[attempt.job.team] += 1
    waiting = {name: 0 for name in queued}
    for line in pool.queues.values():
        for attempt in line:
            waiting[attempt.job.team] += 1
    for name in running:
        running[name].append(held[name])
        queued[name].append(waiting[name])


def _result(pool: _Pool, trace: Sequence[Job], times: list[float],
            running: dict[str, list[int]], queued: dict[str, list[int]]) -> SimResult:
    attempts = pool.attempts.values()
    return SimResult(
        scheduler=pool.scheduler, capacity=pool.capacity, teams=pool.teams,
        period_s=pool.period_s, jobs=tuple(trace), times=times, running=running, queued=queued,
        first_start={a.job.id: a.first_start for a in attempts if a.first_start is not None},
        finish={a.job.id: a.finished for a in attempts if a.finished is not None},
        work_done={a.job.id: a.kept for a in attempts},
        lost_s={a.job.id: a.lost for a in attempts},
        preemptions=pool.preemptions, ticks=pool.ticks)


def _check_trace(teams: Sequence[TeamPolicy], trace: Sequence[Job]) -> None:
    names = {t.name for t in teams}
    problems = [f"job {j.id}: unknown team {j.team!r}" for j in trace if j.team not in names]
    problems += [f"job {j.id}: unknown priority {j.priority!r}" for j in trace
                 if j.priority not in PRIORITIES]
    problems += [f"job {j.id}: duration must be > 0" for j in trace if not j.duration > 0]
    ids = [j.id for j in trace]
    problems += [f"duplicate job id {i!r}" for i in sorted(set(ids)) if ids.count(i) > 1]
    if problems:
        raise ValueError("; ".join(problems))


def bursty_trace(teams: Sequence[str], horizon_s: float, seed: int, busy_load: float = 6.0,
                 median_s: float = 240.0, sigma: float = 0.8, busy_mean_s: float = 1200.0,
                 idle_mean_s: float = 900.0,
                 priorities: Sequence[tuple[str, float]] = (("high", 0.1), ("normal", 0.8),
                                                            ("low", 0.1))) -> list[Job]:
    """Bursty on/off arrivals: each team alternates busy bursts and idle gaps (exponential
    lengths, random phase), arriving as a Poisson process while busy at a rate that offers
    ``busy_load`` slots; durations lognormal with median ``median_s``. Arrivals stop at
    ``horizon_s``; jobs then run to completion."""
    rng = random.Random(seed)
    mean_duration = median_s * math.exp(sigma ** 2 / 2)
    rate = busy_load / mean_duration
    jobs: list[Job] = []
    for team in teams:
        busy = rng.random() < busy_mean_s / (busy_mean_s + idle_mean_s)
        now = 0.0
        while now < horizon_s:
            length = rng.expovariate(1 / (busy_mean_s if busy else idle_mean_s))
            end = min(now + length, horizon_s)
            while busy:
                now += rng.expovariate(rate)
                if now >= end:
                    break
                jobs.append(Job(f"{team}-{len(jobs):05d}", team, round(now, 3),
                                round(rng.lognormvariate(math.log(median_s), sigma), 3),
                                _pick(rng, priorities)))
            now, busy = end, not busy
    return sorted(jobs, key=lambda j: (j.arrival, j.id))


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    draw = rng.random() * sum(weight for _, weight in weighted)
    for value, weight in weighted:
        draw -= weight
        if draw < 0:
            return value
    return weighted[-1][0]
