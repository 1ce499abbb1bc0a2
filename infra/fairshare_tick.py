"""The fair-share controller's I/O on Prefect: read each pool's runs per team queue, ask the
policy (``mlops.fairshare.policy``) for the queue limits, apply them, and preempt.

One ``tick`` is idempotent: it reads the server, decides from what it read alone, and only
writes what differs (a limit that already holds is not written again; a run already
requeued is not requeued twice, thanks to an idempotency key). The loop, its log, its
artifact and its gauges are in ``flows/fairshare_controller.py``.

With an ``audit`` (``infra.fairshare_audit``; the controller always has one), each change
is recorded before it is made, and a pool's changes stop at the first the audit trail
cannot record (listed in ``unrecorded``): they are decided again next tick.

What counts, per team queue of a pool (queue names: ``mlops.fairshare.teams.queue_name``):
- running: runs PENDING or RUNNING. A CANCELLING run (preempted, or cancelled by a person)
  is already leaving: counted, it would be preempted again and its slot given twice;
- queued: runs SCHEDULED to start by now, except those a deployment's own concurrency
  limit holds back (AwaitingConcurrencySlots): a slot would not start them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from infra.fairshare_audit import ControllerAudit
from infra.prefect_api import PAGE, REQUEUED_TAG, patch_queue, read_all
from mlops.fairshare.budget import RunSpan, gpu_hours_by_team, over_budget, period_start
from mlops.fairshare.policy import PRIORITIES, PoolPlan, RunningRun, TeamPolicy, plan_pool
from mlops.fairshare.teams import FairShareConfig, TeamsConfig, queue_name
from mlops.governance.audit.records import Action

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

ACTIVE = ("PENDING", "RUNNING")
HELD_BACK = "AwaitingConcurrencySlots"


@dataclass(frozen=True)
class PoolDecision:
    """One pool's tick: what was read, what the policy decided, and the budget state."""

    pool: str
    capacity: int
    teams: list[TeamPolicy]
    running: list[RunningRun]
    queued: dict[str, dict[str, int]]
    current_limits: dict[str, dict[str, int | None]]
    plan: PoolPlan
    gpu_hours: dict[str, float] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)  # one line per change made on the server
    # Seconds each team's oldest queued run has waited (0 with none): the queue wait series.
    waited: dict[str, float] = field(default_factory=dict)
    unrecorded: list[str] = field(default_factory=list)  # changes held back: not auditable

    def held(self) -> dict[str, int]:
        counts = {team.name: 0 for team in self.teams}
        for run in self.running:
            counts[run.team] += 1
        return counts

    def inputs(self) -> dict[str, Any]:
        """What the decision was made from (logged with it)."""
        return {"pool": self.pool, "capacity": self.capacity, "running": self.held(),
                "queued": {t: sum(by.values()) for t, by in self.queued.items()},
                "over_budget": sorted(t.name for t in self.teams if t.over_budget),
                "gpu_hours": {t: round(h, 3) for t, h in self.gpu_hours.items()}}

    def outputs(self) -> dict[str, Any]:
        return {"allocation": self.plan.allocation, "queue_limits": self.plan.queue_limits,
                "preempt": [run.id for run in self.plan.preempt]}

    def rows(self) -> list[dict[str, Any]]:
        """One row per team: the table artifact a person reads in the Prefect UI."""
        held, borrowed = self.held(), self.plan.borrowed(self.teams)
        return [{"pool": self.pool, "team": t.name, "weight": t.weight, "quota": t.quota,
                 "running": held[t.name], "queued": sum(self.queued[t.name].values()),
                 "allocation": self.plan.allocation[t.name], "borrowed": borrowed[t.name],
                 "limits (high/normal/low)": "/".join(
                     str(self.plan.queue_limits[t.name][p]) for p in PRIORITIES),
                 "over budget": t.over_budget,
                 "gpu hours": round(self.gpu_hours.get(t.name, 0.0), 3)}
                for t in self.teams]


def queue_owners(config: TeamsConfig) -> dict[str, tuple[str, str]]:
    """Queue name -> (team, priority), the same in every pool."""
    return {queue_name(team.name, level): (team.name, level)
            for team in config.teams for level in PRIORITIES}


def team_policies(config: TeamsConfig, pool: str, over: set[str]) -> list[TeamPolicy]:
    """The teams' terms in a pool; over budget, a team holds nothing under ``hold``."""
    hold = config.fairshare is not None and config.fairshare.over_budget == "hold"
    return [TeamPolicy(name=team.name, weight=team.weight, quota=team.quota(pool),
                       borrowing_limit=0 if hold and team.name in over
                       else team.borrowing_limits.get(pool),
                       lending_limit=team.lending_limits.get(pool),
                       over_budget=team.name in over)
            for team in config.teams]


async def tick(client: PrefectClient, config: TeamsConfig, apply: bool = True,
               now: datetime | None = None,
               audit: ControllerAudit | None = None) -> list[PoolDecision]:
    """Decide every pool and, when ``apply``, make the server agree; each decision lists
    the changes made for its pool (and, with ``audit``, those held back unrecorded)."""
    now = now or datetime.now(UTC)
    fairshare = config.fairshare or FairShareConfig()
    used = await read_gpu_hours(client, config, fairshare, now)
    budgets = {team.name: team.budget_gpu_hours for team in config.teams}
    over = over_budget(used, budgets)
    decisions = []
    for pool, spec in config.pools.items():
        # The budget is of the metered pool: over it, a team still keeps its other quotas.
        teams = team_policies(config, pool, over if pool == fairshare.budget_pool else set())
        running, queued, limits, runs, waited = await read_pool(client, config, pool, now)
        plan = plan_pool(spec.capacity, teams, running, queued, fairshare.preemption)
        decision = PoolDecision(pool, spec.capacity, teams, running, queued, limits, plan,
                                used if pool == fairshare.budget_pool else {}, waited=waited)
        if apply:
            held_back = None
            if audit is not None and pool == fairshare.budget_pool:
                held_back = await audit.budget_holds(used, budgets, over, fairshare.over_budget)
            if held_back:  # the plan holds a budget the trail cannot record: change nothing
                decision = replace(decision, unrecorded=[held_back])
            else:
                applied, unrecorded = await apply_decision(client, decision, runs, audit)
                decision = replace(decision, applied=applied, unrecorded=unrecorded)
        decisions.append(decision)
    return decisions


async def read_pool(client: PrefectClient, config: TeamsConfig, pool: str, now: datetime
                    ) -> tuple[list[RunningRun], dict[str, dict[str, int]],
                               dict[str, dict[str, int | None]], dict[str, FlowRun],
                               dict[str, float]]:
    """Running runs, queued counts and current limits per team and priority, the running
    runs by id (preemption requeues them), and how long each team's oldest queued run has
    waited."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterWorkQueueName,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    owners = queue_owners(config)
    queued = {team.name: dict.fromkeys(PRIORITIES, 0) for team in config.teams}
    limits: dict[str, dict[str, int | None]] = {team.name: {} for team in config.teams}
    for queue in await read_all(lambda offset: client.read_work_queues(
            work_pool_name=pool, limit=PAGE, offset=offset)):
        if queue.name in owners:
            team, level = owners[queue.name]
            limits[team][level] = queue.concurrency_limit
    states = [StateType.SCHEDULED, *(StateType(name) for name in ACTIVE)]  # no CANCELLING
    runs = await read_all(lambda offset: client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
            work_queue_name=FlowRunFilterWorkQueueName(any_=list(owners))),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        limit=PAGE, offset=offset))
    running, by_id = [], {}
    waited = {team.name: 0.0 for team in config.teams}
    for run in runs:
        team, level = owners[run.work_queue_name]
        if run.state_type.value in ACTIVE:
            started = run.start_time or run.expected_start_time or now
            running.append(RunningRun(str(run.id), team, started.timestamp(), level))
            by_id[str(run.id)] = run
        elif run.state_name != HELD_BACK and (run.expected_start_time or now) <= now:
            queued[team][level] += 1
            since = (run.expected_start_time or now).timestamp()
            waited[team] = max(waited[team], now.timestamp() - since)
    return running, queued, limits, by_id, waited


async def read_gpu_hours(client: PrefectClient, config: TeamsConfig,
                         fairshare: FairShareConfig, now: datetime) -> dict[str, float]:
    """GPU hours each team used this period on the metered pool, from its runs' times."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterStartTime,
        FlowRunFilterWorkQueueName,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    if not any(team.budget_gpu_hours is not None for team in config.teams):
        return {}
    since = period_start(now, fairshare.budget_period)
    owners = queue_owners(config)
    queues = FlowRunFilterWorkQueueName(any_=list(owners))
    pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[fairshare.budget_pool]))
    spans = []
    for when in (FlowRunFilter(end_time=FlowRunFilterEndTime(after_=since), work_queue_name=queues),
                 FlowRunFilter(end_time=FlowRunFilterEndTime(is_null_=True),
                               start_time=FlowRunFilterStartTime(is_null_=False),
                               work_queue_name=queues)):
        for run in await read_all(lambda offset, when=when: client.read_flow_runs(
                flow_run_filter=when, work_pool_filter=pool, limit=PAGE, offset=offset)):
            if run.start_time is not None:
                spans.append(RunSpan(owners[run.work_queue_name][0], run.start_time,
                                     run.end_time, fairshare.gpus_per_run))
    return gpu_hours_by_team(spans, since, now)


async def apply_decision(client: PrefectClient, decision: PoolDecision,
                         runs: dict[str, FlowRun], audit: ControllerAudit | None = None
                         ) -> tuple[list[str], list[str]]:
    """Write the limits that differ, then preempt: one line per change made, and (with
    ``audit``) the first change the trail could not record, after which none is made."""
    changes: list[str] = []
    for team, levels in decision.plan.queue_limits.items():
        for level, limit in levels.items():
            current = decision.current_limits[team].get(level, "missing")
            if current == "missing":
                continue  # queue not provisioned (yet): `make up` / infra.provision creates it
            if current != limit:
                queue = queue_name(team, level)
                failed = await _record(
                    audit, Action.QUEUE_LIMIT_CHANGED, team, f"{decision.pool}/{queue}",
                    {"pool": decision.pool, "queue": queue, "old": current, "new": limit})
                if failed:
                    return changes, [failed]
                await patch_queue(client, decision.pool, queue, {"concurrency_limit": limit})
                changes.append(f"limit {decision.pool}/{queue} "
                               f"{'unlimited' if current is None else current} -> {limit}")
    held, allocation = decision.held(), decision.plan.allocation
    for victim in decision.plan.preempt:
        failed = await _record(audit, Action.RUN_PREEMPTED, victim.team, victim.id, {
            "pool": decision.pool, "reason": f"team {victim.team} held {held[victim.team]} "
            f"run(s) in {decision.pool}, above its allocation of {allocation[victim.team]}: "
            "the borrowed slot is reclaimed for a team owed its quota (the run is requeued)"})
        if failed:
            return changes, [failed]
        replacement = await preempt(client, runs[victim.id])
        changes.append(f"preempt {decision.pool}/{victim.team} run {victim.id} "
                       f"(requeued as {replacement})")
    return changes, []


async def _record(audit: ControllerAudit | None, action: Action, team: str, subject: str,
                  details: dict[str, Any]) -> str | None:
    """None when recorded (or nothing audits: tests, dry tools), else why not."""
    return None if audit is None else await audit.record(action, team, subject, details)


async def preempt(client: PrefectClient, run: FlowRun) -> str:
    """Requeue a copy of the run (same deployment, parameters and queue), then cancel it.

    In that order, so that a controller stopped in between leaves the work queued twice at
    worst, never lost; the idempotency key makes the next tick reuse the same copy. A
    training run started again resumes from its last checkpoint (``mlops.training.train``).
    """
    from prefect.states import Cancelling, Scheduled

    # Scheduled at the original's time: Prefect starts a queue's runs oldest first, so the
    # copy goes ahead of runs queued after the original instead of to the back of the line.
    copy = await client.create_flow_run_from_deployment(
        run.deployment_id, parameters=run.parameters, work_queue_name=run.work_queue_name,
        state=Scheduled(scheduled_time=run.expected_start_time or run.start_time),
        tags=[*(t for t in run.tags if not t.startswith(REQUEUED_TAG)), "preempted",
              f"{REQUEUED_TAG}{run.id}"],
        idempotency_key=f"preempted:{run.id}", parent_task_run_id=run.parent_task_run_id)
    await client.set_flow_run_state(
        run.id, Cancelling(message=f"preempted by the fair-share controller; requeued as "
                                   f"{copy.name} ({copy.id})"), force=True)
    return str(copy.id)


async def fall_back(client: PrefectClient, config: TeamsConfig,
                    audit: ControllerAudit | None = None) -> list[str]:
    """Every team queue back to its guarantee, as provisioning sets it (the quota on the
    normal queue, 0 on high and low): the limits that must hold while no controller decides,
    so that no borrowed slot outlives the controller that lent it. One line per change; a
    change the audit trail cannot record is not made (and named in the result)."""
    from mlops.fairshare.plan import desired_state

    owners, changes = queue_owners(config), []
    for pool in config.pools:
        current = {queue.name: queue.concurrency_limit
                   for queue in await read_all(lambda offset, pool=pool: client.read_work_queues(
                       work_pool_name=pool, limit=PAGE, offset=offset))}
        for want in desired_state(config).queues:
            if want.pool != pool or want.name not in current:
                continue
            old = current[want.name]
            if old == want.concurrency_limit:
                continue
            failed = await _record(audit, Action.QUEUE_LIMIT_CHANGED, owners[want.name][0],
                                   f"{pool}/{want.name}", {"pool": pool, "queue": want.name,
                                                            "old": old,
                                                            "new": want.concurrency_limit,
                                                            "reason": "controller stopped"})
            if failed:
                return [*changes, f"not changed: {failed}"]
            await patch_queue(client, pool, want.name,
                              {"concurrency_limit": want.concurrency_limit})
            changes.append(f"limit {pool}/{want.name} {old} -> {want.concurrency_limit}")
    return changes
