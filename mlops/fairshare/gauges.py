"""Prometheus gauges of the fair-share controller: per pool and team, what it read and what it
decided, and GPU hours against budgets. Its own registry, served by its own HTTP server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from mlops.fairshare.policy import PRIORITIES, PoolPlan, RunningRun, TeamPolicy

_TEAM = ("pool", "team")


class FairShareGauges:
    """The controller's series; ``update`` after each tick, ``serve`` once at start."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauge = lambda name, doc, labels=_TEAM: Gauge(  # noqa: E731
            f"mlops_fairshare_{name}", doc, labels, registry=self.registry)
        self.running = gauge("running", "Runs holding a slot (pending, running, cancelling).")
        self.queued = gauge("queued", "Runs scheduled to start by now.")
        self.quota = gauge("quota", "Nominal quota: guaranteed while the team has demand.")
        self.weight = gauge("weight", "Share of idle capacity relative to other teams.")
        self.allocation = gauge("allocation", "Runs the team may hold now.")
        self.borrowed = gauge("borrowed", "Allocation above the team's quota.")
        self.queue_limit = gauge("queue_limit", "Concurrency limit set on a team's queue.",
                                 (*_TEAM, "priority"))
        self.over_budget = gauge("over_budget", "1 while the team is over its GPU-hour budget.")
        self.gpu_hours = gauge("gpu_hours_used", "GPU hours used this budget period.", ("team",))
        self.budget = gauge("gpu_hours_budget", "GPU-hour budget per period.", ("team",))
        self.capacity = Gauge("mlops_fairshare_capacity", "Slots in the pool.", ("pool",),
                              registry=self.registry)
        self.oldest_queued = gauge("oldest_queued_seconds", "How long the team's oldest run "
                                   "queued by now has waited (0 with none).")
        self.period = Gauge("mlops_fairshare_period_seconds", "Seconds between the "
                            "controller's ticks.", registry=self.registry)
        self.last_tick = Gauge("mlops_fairshare_last_tick_timestamp_seconds", "Unix time of "
                               "the controller's last tick.", registry=self.registry)
        self.preemptions = Counter("mlops_fairshare_preemptions", "Runs preempted (requeued).",
                                   _TEAM, registry=self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def update(self, pool: str, teams: Sequence[TeamPolicy], running: Sequence[RunningRun],
               queued: Mapping[str, Mapping[str, int]], plan: PoolPlan,
               capacity: int | None = None, waited: Mapping[str, float] | None = None) -> None:
        borrowed = plan.borrowed(teams)
        if capacity is not None:
            self.capacity.labels(pool).set(capacity)
        self.last_tick.set(time.time())
        for team in teams:
            labels = (pool, team.name)
            self.running.labels(*labels).set(sum(run.team == team.name for run in running))
            self.queued.labels(*labels).set(sum(queued.get(team.name, {}).values()))
            self.quota.labels(*labels).set(team.quota)
            self.weight.labels(*labels).set(team.weight)
            self.allocation.labels(*labels).set(plan.allocation[team.name])
            self.borrowed.labels(*labels).set(borrowed[team.name])
            self.over_budget.labels(*labels).set(int(team.over_budget))
            self.oldest_queued.labels(*labels).set((waited or {}).get(team.name, 0.0))
            for level in PRIORITIES:
                self.queue_limit.labels(*labels, level).set(plan.queue_limits[team.name][level])
        for run in plan.preempt:
            self.preemptions.labels(pool, run.team).inc()

    def update_budgets(self, used: Mapping[str, float],
                       budgets: Mapping[str, float | None]) -> None:
        for team, budget in budgets.items():
            self.gpu_hours.labels(team).set(used.get(team, 0.0))
            if budget is not None:
                self.budget.labels(team).set(budget)
