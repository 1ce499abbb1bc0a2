"""Fair share of one pool between teams: the semantics of Kueue's cohorts on Prefect queues.

Pure policy: no Prefect, no clock. The controller (``infra/fairshare_tick.py``) and the
simulator (``benchmarks/fairshare_sim/simulator.py``) drive the same functions.

- ``allocate``: how many runs each team may hold now. First each team's guarantee,
  min(nominal quota, demand); then the rest of the pool by weighted max-min (water-filling,
  one slot at a time to the team whose share per weight stays lowest), within each team's
  borrowing limit (slots above its quota) and the lending limits of teams that do not use
  their quota. A team over its budget keeps no guarantee and gets only what every team
  within budget left idle.
- ``headroom``: idle slots handed out as queue limits above the allocation, up to each
  team's unused quota, so a run that arrives within its team's quota starts at once
  instead of waiting for the next controller tick.
- ``split_by_priority``: a team's allowance over its high, normal and low queues.
- ``select_preemptions``: with preemption on, which borrowed runs to cancel (and requeue)
  so that teams below their guarantee get it now rather than when borrowed runs end.
- ``share_free_slots``: while reclaim is under way, the free slots go to the teams owed
  their guarantee before anyone else.
- ``plan_pool``: all of the above for one pool, from its running and queued runs: what the
  controller applies each tick and what the simulator replays.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PRIORITIES = ("high", "normal", "low")  # served in this order within a team


@dataclass(frozen=True)
class TeamPolicy:
    """One team's terms in one pool."""

    name: str
    weight: float = 1.0
    quota: int = 0  # nominal quota: guaranteed while the team has that much demand
    borrowing_limit: int | None = None  # most slots above its quota; None: no limit
    lending_limit: int | None = None  # most of its unused quota others may use; None: all
    over_budget: bool = False  # no guarantee; only capacity that teams within budget leave


@dataclass(frozen=True)
class RunningRun:
    """A run holding a slot, as preemption sees it."""

    id: str
    team: str
    started_at: float  # seconds, any epoch: only the order matters
    priority: str = "normal"


def check_pool(capacity: int, teams: Sequence[TeamPolicy], demand: Mapping[str, int]) -> None:
    """Refuse inputs the policy has no answer for, naming the problem."""
    names = [team.name for team in teams]
    problems = []
    if capacity < 0:
        problems.append(f"capacity must not be negative, got {capacity}")
    problems += [f"duplicate team {name!r}" for name in sorted(set(names))
                 if names.count(name) > 1]
    for team in teams:
        if not team.weight > 0:
            problems.append(f"team {team.name}: weight must be > 0, got {team.weight}")
        for attribute in ("quota", "borrowing_limit", "lending_limit"):
            value = getattr(team, attribute)
            if value is not None and value < 0:
                problems.append(f"team {team.name}: {attribute} must not be negative, got {value}")
    problems += [f"demand for unknown team {name!r}" for name in demand if name not in names]
    problems += [f"team {name}: demand must not be negative, got {value}"
                 for name, value in demand.items() if value < 0]
    total = sum(team.quota for team in teams)
    if total > capacity:
        problems.append(f"quotas sum to {total}, above the capacity {capacity}")
    if problems:
        raise ValueError("; ".join(problems))


def guarantee(team: TeamPolicy, demand: int) -> int:
    """What the team gets whatever the others want: its quota, as far as it has demand."""
    return 0 if team.over_budget else min(team.quota, demand)


def ceiling(team: TeamPolicy, demand: int) -> int:
    """The most the team may hold: its demand, within its borrowing limit."""
    if team.borrowing_limit is None:
        return demand
    return min(demand, max(guarantee(team, demand), team.quota + team.borrowing_limit))


def reserved(team: TeamPolicy, demand: int) -> int:
    """Unused quota the team does not lend (beyond its lending limit): kept idle for it."""
    if team.over_budget or team.lending_limit is None:
        return 0
    return max(0, team.quota - guarantee(team, demand) - team.lending_limit)


def allocate(capacity: int, teams: Sequence[TeamPolicy],
             demand: Mapping[str, int]) -> dict[str, int]:
    """Each team's allocation: the runs it may hold now (see the module docstring)."""
    check_pool(capacity, teams, demand)
    wants = {team.name: demand.get(team.name, 0) for team in teams}
    limits = {team.name: guarantee(team, wants[team.name]) for team in teams}
    free = capacity - sum(limits.values()) - sum(reserved(t, wants[t.name]) for t in teams)
    within = [team for team in teams if not team.over_budget]
    over = [team for team in teams if team.over_budget]
    for tier in (within, over):  # over-budget teams only get what the others left
        free = _water_fill(tier, limits, {t.name: ceiling(t, wants[t.name]) for t in tier}, free)
    return limits


def headroom(capacity: int, teams: Sequence[TeamPolicy],
             limits: Mapping[str, int]) -> dict[str, int]:
    """Queue limits: the allocation plus idle slots up to each team's unused quota.

    Only slots nobody was allocated are handed out, so the limits still sum to at most the
    capacity: a team that arrives within its quota starts at once, and a borrower's limit
    is never raised past its allocation. Unused quota a team does not lend was kept idle
    for it alone, so it goes to that team first, not into the shared water-filling.
    """
    raised = dict(limits)
    free = capacity - sum(limits.values())
    for team in teams:  # an allocation below quota is the team's demand: same reserve
        kept = min(reserved(team, limits[team.name]), max(0, free))
        raised[team.name] += kept
        free -= kept
    caps = {team.name: max(limits[team.name], 0 if team.over_budget else team.quota)
            for team in teams}
    _water_fill(list(teams), raised, caps, free)
    return raised


def _water_fill(teams: Sequence[TeamPolicy], limits: dict[str, int], caps: Mapping[str, int],
                free: int) -> int:
    """Hand out ``free`` slots one at a time, each to the team whose share per weight after
    taking it is lowest, until every team reaches its cap; returns the slots left."""
    heap = [((limits[t.name] + 1) / t.weight, t.name, t.weight) for t in teams
            if limits[t.name] < caps[t.name]]
    heapq.heapify(heap)
    while free > 0 and heap:
        _, name, weight = heapq.heappop(heap)
        limits[name] += 1
        free -= 1
        if limits[name] < caps[name]:
            heapq.heappush(heap, ((limits[name] + 1) / weight, name, weight))
    return free


def split_by_priority(allowed: int, running: Mapping[str, int],
                      queued: Mapping[str, int]) -> dict[str, int]:
    """Queue limits for a team's priority queues from the runs the team may hold.

    Prefect starts a queue's runs while it holds fewer than its limit, so a limit is both a
    cap and a standing permission to refill a freed slot before the next tick. Each queue's
    share of ``allowed`` goes high first, then normal, then low, by demand (running plus
    queued); its limit is its share, and no higher than its running runs plus the starts
    the team's free slots allow (high first), so the team never holds more than ``allowed``
    and a queue above its share (reclaim) refills nothing. Slots still free go to the
    normal queue, where runs that arrive before the next tick most often land.
    """
    remaining = allowed
    shares = {}
    for priority in PRIORITIES:
        shares[priority] = min(running.get(priority, 0) + queued.get(priority, 0), remaining)
        remaining -= shares[priority]
    free = max(0, allowed - sum(running.get(p, 0) for p in PRIORITIES))
    limits = {}
    for priority in PRIORITIES:
        starts = min(queued.get(priority, 0), free)
        limits[priority] = min(shares[priority], running.get(priority, 0) + starts)
        free -= starts
    limits["normal"] += free
    return limits


def select_preemptions(teams: Sequence[TeamPolicy], limits: Mapping[str, int],
                       running: Sequence[RunningRun], queued: Mapping[str, int],
                       capacity: int) -> list[RunningRun]:
    """Borrowed runs to cancel so that every team below its guarantee reaches it now.

    Only what free slots cannot cover is preempted (with the pool over its capacity, as
    after it shrank, that includes the overflow), and only from teams holding more than
    their allocation (all such runs are borrowed: a team's allocation is at least its
    quota while its demand exceeds it). Victims: low priority first, then newest first,
    so the least work is lost.
    """
    held = {team.name: 0 for team in teams}
    for run in running:
        held[run.team] += 1
    demand = {name: held[name] + queued.get(name, 0) for name in held}
    owed = sum(max(0, min(guarantee(team, demand[team.name]), limits[team.name]) - held[team.name])
               for team in teams)
    needed = owed - (capacity - len(running)) if owed else 0
    excess = {name: held[name] - limits[name] for name in held}
    rank = {priority: index for index, priority in enumerate(PRIORITIES)}
    candidates = sorted(running, key=lambda run: (-rank.get(run.priority, 1), -run.started_at))
    victims = []
    for run in candidates:
        if needed <= 0:
            break
        if excess[run.team] > 0:
            victims.append(run)
            excess[run.team] -= 1
            needed -= 1
    return victims


@dataclass(frozen=True)
class PoolPlan:
    """One tick's decision for a pool."""

    allocation: dict[str, int]  # runs each team may hold
    queue_limits: dict[str, dict[str, int]]  # team -> priority -> queue concurrency limit
    preempt: list[RunningRun] = field(default_factory=list)  # cancel and requeue these

    def borrowed(self, teams: Sequence[TeamPolicy]) -> dict[str, int]:
        """Slots each team holds above its quota (counted in its allocation)."""
        return {t.name: max(0, self.allocation[t.name] - t.quota) for t in teams}


def plan_pool(capacity: int, teams: Sequence[TeamPolicy], running: Sequence[RunningRun],
              queued: Mapping[str, Mapping[str, int]], preemption: bool = False) -> PoolPlan:
    """The queue limits (and, with preemption, the runs to preempt) for one pool.

    ``queued`` is team -> priority -> runs waiting to start. Demand is running plus queued.
    Preempted runs count as queued again (they are requeued), so their slots go to the
    teams owed them within this same plan.
    """
    held = {t.name: {p: 0 for p in PRIORITIES} for t in teams}
    for run in running:
        held[run.team][run.priority] += 1
    waiting = {t.name: {p: queued.get(t.name, {}).get(p, 0) for p in PRIORITIES} for t in teams}
    demand = {t.name: sum(held[t.name].values()) + sum(waiting[t.name].values()) for t in teams}
    allocation = allocate(capacity, teams, demand)
    victims = []
    if preemption:
        totals = {name: sum(by.values()) for name, by in waiting.items()}
        victims = select_preemptions(teams, allocation, running, totals, capacity)
        for run in victims:
            held[run.team][run.priority] -= 1
            waiting[run.team][run.priority] += 1
    holding = {name: sum(by.values()) for name, by in held.items()}
    allowed = share_free_slots(capacity, teams, demand, allocation,
                               headroom(capacity, teams, allocation), holding)
    limits = {t.name: split_by_priority(allowed[t.name], held[t.name], waiting[t.name])
              for t in teams}
    return PoolPlan(allocation, limits, victims)


def share_free_slots(capacity: int, teams: Sequence[TeamPolicy], demand: Mapping[str, int],
                     allocation: Mapping[str, int], allowed: Mapping[str, int],
                     holding: Mapping[str, int]) -> dict[str, int]:
    """Cap the starts the limits allow to the slots actually free, owed teams first.

    While a team still holds more than its allocation (reclaim under way), the limits leave
    room for more starts than the pool has free slots, and Prefect would hand a freed slot
    to whichever queue it serves first, not to the team owed its guarantee. So the free
    slots go first to teams below min(guarantee, allocation), then in team order; a team
    over its allocation keeps a limit below what it holds, so it refills nothing.
    """
    room = {t.name: max(0, allowed[t.name] - holding[t.name]) for t in teams}
    free = capacity - sum(holding.values())
    if sum(room.values()) <= free:
        return dict(allowed)
    starts = dict.fromkeys(room, 0)
    owed = {t.name: max(0, min(guarantee(t, demand[t.name]), allocation[t.name])
                        - holding[t.name]) for t in teams}
    for cap in (owed, room):
        for name in starts:
            give = max(0, min(cap[name] - starts[name], room[name] - starts[name], free))
            starts[name] += give
            free -= give
    return {name: allowed[name] if room[name] == 0 else holding[name] + starts[name]
            for name in allowed}
