"""Autoscaled GPU nodes with spot capacity under the fair-share simulator, against a static pool.

Why: a pool sized for its peak pays for idle GPUs between bursts. ``NodePool`` is the
simulator's ``NodeModel``: the pool's slots are the GPUs of the nodes that are up.

- Scale out after each instant's starts: the runs still queued, plus those on nodes under a
  reclaim notice, plus the spare, less the free GPUs of ready nodes and the GPUs of booting
  ones, is the shortfall; nodes of ``node_gpus`` are launched for it (their GPUs count
  ``boot_s`` later) while at most ``max_nodes`` are booting or ready. A node under notice
  is leaving, so its replacement starts at the notice.
- Scale in: a ready node that held no run for ``idle_s`` is stopped unless its GPUs are
  needed for the spare.
- The spare: free GPUs kept for runs about to arrive, since a run arriving to a full pool
  waits a boot: ``spare_gpus`` plus ``spare_sqrt`` x sqrt(runs running and queued), while a
  run arrived within ``spare_memory_s``. It uses only what a cluster autoscaler sees now.
- ``initial_nodes`` are up at time 0, as if launched before, and scaled in as usual.
- Spot: a launch is a spot node unless spot is off or unavailable (probability
  ``spot_unavailable`` per request), then on-demand. A spot node gets a reclaim notice after
  an exponential lifetime from launch (mean ``spot_lifetime_s``): it takes no new runs and
  is stopped once empty; ``notice_s`` after the notice its runs stop, keep the work up to
  their last checkpoint and go back to the front of their queue (the simulator's ``stop``).
- Runs go to spot nodes before on-demand ones, the fullest first, so on-demand nodes and
  spare GPUs empty first and are scaled in.
- The controller plans with the GPUs that hold or take runs (ready nodes, and the runs on
  noticed ones) and quotas scaled to them (rounded down), so it shares what is up.
- ``min_nodes`` on-demand nodes are ready at time 0 and never stopped: with ``min_nodes ==
  max_nodes`` this is the static pool, run for run.

Paid: every node from launch (boot included) until stopped, or the last event. Seeded
(``seed``); deterministic otherwise.

``compare_node_scaling``: the bench's bursty trace through a static on-demand pool of
``capacity`` GPUs (by default its peak demand, ``peak_demand``, in whole nodes, so that no
run waits for a GPU; paid from 0 to its last finish), and through the autoscaler (at most the
same GPUs) on on-demand nodes only and with spot nodes; GPU-hours paid, cost, p99 wait per
team, work redone after reclaims, and the simulator's fair-share scores.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

from benchmarks.bench_fairshare import QUICK_HORIZON_S, check_conservation, team_terms
from benchmarks.fairshare_sim.scores import Metrics, summarise
from benchmarks.fairshare_sim.simulator import (
    _NODE,
    Job,
    SimResult,
    _Attempt,
    _Pool,
    bursty_trace,
    simulate,
)
from mlops.fairshare.policy import TeamPolicy

BOOTING, READY, NOTICED, GONE = "booting", "ready", "noticed", "gone"


@dataclass(frozen=True)
class NodeParams:
    """How nodes come and go (see the module docstring)."""

    node_gpus: int = 2
    max_nodes: int = 8
    min_nodes: int = 0
    boot_s: float = 120.0
    idle_s: float = 600.0
    spare_gpus: int = 0  # free GPUs kept ready (the spare) while runs arrive
    spare_sqrt: float = 0.0  # more spare: this x sqrt(runs running and queued), rounded up
    spare_memory_s: float = 3600.0  # the spare is kept until this long after the last arrival
    initial_nodes: int = 0  # nodes up at time 0, as if launched before (scaled in as usual)
    spot: bool = True
    spot_unavailable: float = 0.1
    spot_lifetime_s: float = 4 * 3600.0
    notice_s: float = 120.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [f"{name} must be > 0" for name in ("node_gpus", "max_nodes",
                                                       "spot_lifetime_s")
                    if not getattr(self, name) > 0]
        problems += [f"{name} must be >= 0" for name in ("boot_s", "idle_s", "notice_s",
                                                         "spare_gpus", "spare_sqrt",
                                                         "spare_memory_s")
                     if not getattr(self, name) >= 0]
        if not 0 <= self.initial_nodes <= self.max_nodes:
            problems.append("initial_nodes must be in 0..max_nodes")
        if not 0 <= self.min_nodes <= self.max_nodes:
            problems.append("min_nodes must be in 0..max_nodes")
        if not 0 <= self.spot_unavailable <= 1:
            problems.append("spot_unavailable must be a probability")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Node:
    """One node's life."""

    id: int
    spot: bool
    launched: float
    state: str = BOOTING
    runs: set[str] = field(default_factory=set)
    idle_since: float | None = None
    stopped: float | None = None
    kept: bool = False  # a min node: never scaled in
    notice_key: int | None = None  # its pending reclaim notice, cancelled at scale-in


class NodePool:
    """The simulator's ``NodeModel``: nodes, their events, and what they cost in GPU time."""

    def __init__(self, params: NodeParams) -> None:
        self.params = params
        self.rng = random.Random(params.seed)
        self.nodes: list[Node] = []
        self.where: dict[str, Node] = {}  # job id -> its node
        self.actions: dict[int, Callable[[float], None]] = {}
        self.reclaims = self.runs_stopped = 0
        self.lost_s = 0.0  # work since the last checkpoint of runs stopped by reclaims
        self.end = 0.0  # the last instant seen
        self.last_arrival = -math.inf  # of the runs seen queued or started
        self._pool: _Pool | None = None
        self._keys = 0

    @property
    def pool(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("NodePool used before simulate() bound it to a pool")
        return self._pool

    def bind(self, pool: _Pool) -> None:
        self._pool = pool
        for _ in range(self.params.min_nodes):
            node = Node(len(self.nodes), False, 0.0, READY, kept=True)
            self.nodes.append(node)
        for _ in range(max(0, self.params.initial_nodes - self.params.min_nodes)):
            self._launch(0.0).state = READY  # its boot event then finds it ready
            self._idle(0.0, self.nodes[-1])

    def room(self) -> bool:
        return any(n.state == READY and len(n.runs) < self.params.node_gpus for n in self.nodes)

    def place(self, time: float, attempt: _Attempt) -> None:
        free = [n for n in self.nodes if n.state == READY and len(n.runs) < self.params.node_gpus]
        node = min(free, key=lambda n: (not n.spot, -len(n.runs), n.id))
        node.runs.add(attempt.job.id)
        node.idle_since = None
        self.where[attempt.job.id] = node
        self.last_arrival = max(self.last_arrival, attempt.job.arrival)

    def release(self, time: float, attempt: _Attempt) -> None:
        node = self.where.pop(attempt.job.id)
        node.runs.discard(attempt.job.id)
        if node.runs:
            return
        if node.state == READY:
            self._idle(time, node)
        elif node.state == NOTICED:
            self._stop(time, node)

    def policy_view(self, teams: tuple[TeamPolicy, ...]) -> tuple[int, Sequence[TeamPolicy]]:
        up = sum(self.params.node_gpus if n.state == READY else len(n.runs)
                 for n in self.nodes if n.state in (READY, NOTICED))
        nominal = self.pool.capacity
        if up >= nominal:
            return up, teams
        return up, [replace(t, quota=t.quota * up // nominal) for t in teams]

    def handle(self, time: float, number: int) -> None:
        self.end = max(self.end, time)
        self.actions.pop(number)(time)

    def settle(self, time: float) -> None:
        """Scale out for the shortfall (module docstring)."""
        self.end = max(self.end, time)
        gpus = self.params.node_gpus
        lines = [line for line in self.pool.queues.values() if line]
        # a queue's newest arrival is at its back (a stopped run goes back to the front)
        self.last_arrival = max([self.last_arrival] + [line[-1].job.arrival for line in lines])
        queued = sum(len(line) for line in lines)
        leaving = sum(len(n.runs) for n in self.nodes if n.state == NOTICED)
        supply = sum(gpus - len(n.runs) if n.state == READY else gpus
                     for n in self.nodes if n.state in (READY, BOOTING))
        active = sum(n.state in (READY, BOOTING) for n in self.nodes)
        wanted = math.ceil((queued + leaving + self._spare(time) - supply) / gpus)
        for _ in range(min(wanted, self.params.max_nodes - active)):
            self._launch(time)

    def gpu_seconds(self, spot: bool | None = None) -> float:
        """GPU-seconds paid, of spot nodes (True), on-demand ones (False) or all (None)."""
        return sum(self.params.node_gpus * ((self.end if n.stopped is None else n.stopped)
                                            - n.launched)
                   for n in self.nodes if spot is None or n.spot == spot)

    def _later(self, time: float, action: Callable[[float], None]) -> int:
        self._keys += 1
        key = self._keys
        self.actions[key] = action
        self.pool.push(time, _NODE, None, key)
        return key

    def _launch(self, time: float) -> Node:
        spot = self.params.spot and self.rng.random() >= self.params.spot_unavailable
        node = Node(len(self.nodes), spot, time)
        self.nodes.append(node)
        self._later(time + self.params.boot_s, partial(self._ready, node))
        if spot:
            node.notice_key = self._later(time + self.lifetime(), partial(self._notice, node))
        return node

    def lifetime(self) -> float:
        """A spot node's time from launch to its reclaim notice (seeded exponential)."""
        return self.rng.expovariate(1 / self.params.spot_lifetime_s)

    def _ready(self, node: Node, time: float) -> None:
        if node.state == BOOTING:
            node.state = READY
            self._idle(time, node)

    def _idle(self, time: float, node: Node) -> None:
        node.idle_since = time
        if not node.kept:
            self._later(time + self.params.idle_s, partial(self._scale_in, node, time))

    def _scale_in(self, node: Node, since: float, time: float) -> None:
        if node.state != READY or node.runs or node.idle_since != since:
            return
        free = sum(self.params.node_gpus - len(n.runs) for n in self.nodes if n.state == READY)
        if free - self.params.node_gpus >= self._spare(time):
            self._stop(time, node)
        else:  # still needed as spare: idle for another period
            self._idle(time, node)

    def _spare(self, time: float) -> int:
        """Free GPUs to keep for runs yet to arrive: a base, plus a term for the running and
        queued runs' fluctuation (it grows like the square root of their number, as in an
        M/G/inf queue); none once nothing has arrived for ``spare_memory_s``."""
        if time - self.last_arrival > self.params.spare_memory_s:
            return 0
        demand = len(self.pool.running) + sum(len(line) for line in self.pool.queues.values())
        return self.params.spare_gpus + math.ceil(self.params.spare_sqrt * math.sqrt(demand))

    def _notice(self, node: Node, time: float) -> None:
        node.notice_key = None
        if node.state in (BOOTING, READY):
            node.state = NOTICED
            self.reclaims += 1
            if node.runs:
                self._later(time + self.params.notice_s, partial(self._reclaim, node))
            else:
                self._stop(time, node)

    def _reclaim(self, node: Node, time: float) -> None:
        running = [self.pool.running[job_id] for job_id in node.runs]
        for attempt in sorted(running, key=lambda a: (a.job.arrival, a.job.id), reverse=True):
            lost_before = attempt.lost
            self.pool.stop(time, attempt)  # its release stops the node once empty
            self.lost_s += attempt.lost - lost_before
            self.runs_stopped += 1

    def _stop(self, time: float, node: Node) -> None:
        node.state, node.stopped = GONE, time
        if node.notice_key is not None:  # a stale notice would keep the simulation going
            self.actions.pop(node.notice_key)
            events = self.pool.events
            events[:] = [e for e in events if not (e[1] == _NODE and e[4] == node.notice_key)]
            heapq.heapify(events)
            node.notice_key = None


SETUPS = ("static", "autoscaled on-demand", "autoscaled spot")
# Autoscaling policies compared by the bench (``compare_node_scaling`` params); "initial_nodes"
# is capped at max_nodes: every node up at 0, as the static pool's are.
POLICIES: dict[str, dict[str, Any]] = {
    "reactive": {},
    "reactive, warm start": {"initial_nodes": 1000},
    "spare buffer": {"node_gpus": 1, "idle_s": 60.0, "spare_gpus": 5, "spare_sqrt": 1.25,
                     "initial_nodes": 1000},
    "lean spare buffer": {"node_gpus": 1, "idle_s": 60.0, "spare_gpus": 6, "spare_sqrt": 0.5,
                          "initial_nodes": 1000},
}
HORIZON_S = 6 * 3600.0


@dataclass(frozen=True)
class Settings:
    """The comparison's pool, prices, scheduler and trace (nodes: ``NodeParams``)."""

    capacity: int | None = None  # the static pool's GPUs, and the autoscaler's most; None:
    # the trace's peak demand (``peak_demand``) rounded up to whole nodes
    spot_price: float = 1.4  # $ per GPU-hour
    on_demand_price: float = 4.0
    scheduler: str = "fair-share"
    period_s: float = 10.0
    checkpoint_s: float = 60.0
    busy_load: float = 6.0  # ``bursty_trace``'s: the slots a busy team offers


@dataclass(frozen=True)
class SetupRow:
    """One setup's outcome on the trace."""

    setup: str
    gpu_hours_paid: float
    spot_gpu_hours: float
    cost: float
    cost_on_demand_only: float  # the spot row: the on-demand autoscaler's cost; else its own
    wait_p99_s: dict[str, float]
    lost_gpu_hours: float  # work redone after spot reclaims
    reclaims: int  # spot nodes given a notice
    runs_stopped: int  # runs stopped by a reclaim
    busy_gpu_hours: float  # GPU time held by runs: the work plus what was redone
    nodes_launched: int
    metrics: Metrics


@dataclass(frozen=True)
class NodeScalingReport:
    """The three setups (``SETUPS``) on one trace."""

    seed: int
    horizon_s: float
    peak_demand: int  # the most runs of the trace that would run at once with no limit
    capacity: int  # the static pool's GPUs (the settings', or the peak in whole nodes)
    settings: Settings
    nodes: NodeParams  # the spot setup's; the on-demand one differs only in spot=False
    rows: tuple[SetupRow, ...]

    def row(self, setup: str) -> SetupRow:
        return next(row for row in self.rows if row.setup == setup)

    def checks(self) -> list[tuple[str, bool, str]]:
        """(target, passed, measured): the spot autoscaler against the static pool."""
        static, spot = self.row("static"), self.row("autoscaled spot")
        paid = spot.gpu_hours_paid / static.gpu_hours_paid
        saving = 1 - spot.cost / spot.cost_on_demand_only
        checks = [("GPU-hours paid <= 0.7x static", paid <= 0.7, f"{paid:.2f}x"),
                  ("spot cost >= 40% below on-demand only", saving >= 0.4, f"{saving:.0%}")]
        for team, wait in spot.wait_p99_s.items():
            ratio = _ratio(wait, static.wait_p99_s[team])
            checks.append((f"p99 wait {team} <= 1.2x static", ratio <= 1.2,
                           f"{wait:.0f} s vs {static.wait_p99_s[team]:.0f} s ({ratio:.2f}x)"))
        return checks

    def headline(self) -> str:
        """The trace's peak and the pools sized from it."""
        gpus = self.nodes.node_gpus
        return (f"seed {self.seed}, {self.horizon_s / 3600:g} h: peak demand "
                f"{self.peak_demand} runs at once; static pool {self.capacity} GPUs; "
                f"autoscaler up to {self.nodes.max_nodes} nodes of {gpus} GPUs")

    def table(self) -> list[str]:
        """Markdown rows: one per setup."""
        teams = list(self.rows[0].wait_p99_s)
        lines = ["| setup | GPU-h paid (spot) | cost $ | cost on-demand only $ | p99 wait "
                 + " / ".join(teams) + " (s) | GPU-h lost | reclaims (runs stopped) "
                 "| busy / paid | Jain mean |", "|---" * 9 + "|"]
        for r in self.rows:
            lines.append(
                f"| {r.setup} | {r.gpu_hours_paid:.1f} ({r.spot_gpu_hours:.1f}) | {r.cost:.0f} "
                f"| {r.cost_on_demand_only:.0f} | "
                + " / ".join(f"{r.wait_p99_s[t]:.0f}" for t in teams)
                + f" | {r.lost_gpu_hours:.3f} | {r.reclaims} ({r.runs_stopped}) "
                f"| {r.busy_gpu_hours / r.gpu_hours_paid:.0%} | {r.metrics.jain_mean:.3f} |")
        return lines


def compare_node_scaling(seed: int = 7, teams: int = 4, quick: bool = False,
                         **params: Any) -> NodeScalingReport:
    """The three setups on ``bursty_trace`` (6 h, or 2 h when ``quick``) with the bench's
    teams (quotas from the static pool's capacity). ``params``: any ``Settings`` or
    ``NodeParams`` field; the capacity defaults to the trace's peak demand rounded up to
    whole nodes, the nodes' seed to ``seed`` and ``max_nodes`` to ``capacity // node_gpus``."""
    node_fields = {f.name for f in fields(NodeParams)}
    settings = Settings(**{k: v for k, v in params.items() if k not in node_fields})
    given = {k: v for k, v in params.items() if k in node_fields}
    horizon = QUICK_HORIZON_S if quick else HORIZON_S
    names = [t.name for t in team_terms(teams, 0)]
    trace = bursty_trace(names, horizon, seed, busy_load=settings.busy_load)
    peak = peak_demand(trace)
    gpus = given.get("node_gpus", NodeParams.node_gpus)
    capacity = (math.ceil(peak / gpus) * gpus if settings.capacity is None
                else settings.capacity)
    given.setdefault("seed", seed)
    given.setdefault("max_nodes", capacity // gpus)
    given["initial_nodes"] = min(given.get("initial_nodes", 0), given["max_nodes"])
    spot_nodes = NodeParams(**given)
    terms = team_terms(teams, capacity)
    static = _run(settings, terms, trace, capacity, None)
    rows = [_row("static", static, settings, None, None)]
    for setup, node_params in (("autoscaled on-demand", replace(spot_nodes, spot=False)),
                               ("autoscaled spot", spot_nodes)):
        pool = NodePool(node_params)
        result = _run(settings, terms, trace, node_params.max_nodes * node_params.node_gpus,
                      pool)
        rows.append(_row(setup, result, settings, pool, rows[-1].cost))
    return NodeScalingReport(seed, horizon, peak, capacity, settings, spot_nodes, tuple(rows))


def peak_demand(trace: Sequence[Job]) -> int:
    """The most runs of ``trace`` that would run at once with unlimited capacity: the most
    ``[arrival, arrival + duration)`` intervals that overlap (a finish frees its slot for
    an arrival at the same instant). What a static pool must hold so that no run waits."""
    edges = sorted([(j.arrival + j.duration, -1) for j in trace]
                   + [(j.arrival, 1) for j in trace])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def _run(settings: Settings, terms: Sequence[TeamPolicy], trace: Sequence[Job], capacity: int,
         pool: NodePool | None) -> SimResult:
    result = simulate(capacity, terms, trace, settings.scheduler, settings.period_s,
                      settings.checkpoint_s, nodes=pool)
    problems = check_conservation(result)
    if problems:
        raise RuntimeError("simulation error: " + "; ".join(problems[:5]))
    return result


def _row(setup: str, result: SimResult, settings: Settings, pool: NodePool | None,
         on_demand_cost: float | None) -> SetupRow:
    """``on_demand_cost``: what the on-demand-only run of the same autoscaler cost."""
    if pool is None:
        paid_s, spot_s = result.capacity * result.times[-1], 0.0
    else:
        paid_s, spot_s = pool.gpu_seconds(), pool.gpu_seconds(spot=True)
    cost = (spot_s * settings.spot_price + (paid_s - spot_s) * settings.on_demand_price) / 3600
    busy = sum(result.work_done.values()) + sum(result.lost_s.values())
    metrics = summarise(result)
    return SetupRow(
        setup, paid_s / 3600, spot_s / 3600, cost,
        cost if pool is None or not pool.params.spot else on_demand_cost or math.nan,
        metrics.wait_p99_s, (pool.lost_s if pool else 0.0) / 3600,
        pool.reclaims if pool else 0, pool.runs_stopped if pool else 0, busy / 3600,
        len(pool.nodes) if pool else 0, metrics)


def _ratio(value: float, reference: float) -> float:
    if reference > 0:
        return value / reference
    return 1.0 if value <= 0 else math.inf
