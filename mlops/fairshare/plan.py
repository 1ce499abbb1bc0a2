"""The plan that applies a teams file: the Prefect objects it implies, and the changes that
turn a server's current state into them (create and update only; unmanaged ones are
reported, never deleted). Pure: ``infra/provision.py`` reads the server and applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlops.fairshare.policy import PRIORITIES
from mlops.fairshare.teams import LIMIT_PREFIX, TeamsConfig, limit_name, queue_name


@dataclass(frozen=True)
class PoolState:
    """A work pool as the plan sees it; concurrency_limit None means unlimited."""

    name: str
    type: str
    concurrency_limit: int | None


@dataclass(frozen=True)
class QueueState:
    """A work queue in a pool; priority 1 is served first."""

    pool: str
    name: str
    concurrency_limit: int | None
    priority: int


@dataclass(frozen=True)
class LimitState:
    """A global concurrency limit."""

    name: str
    limit: int
    active: bool = True


@dataclass(frozen=True)
class DesiredState:
    """Pools, queues and limits: what the file asks for, or what a server holds."""

    pools: tuple[PoolState, ...] = ()
    queues: tuple[QueueState, ...] = ()
    limits: tuple[LimitState, ...] = ()
    # The fair-share controller sets queue limits: the plan creates queues with their
    # starting limit but never updates an existing queue's limit.
    controller_owns_limits: bool = False


CurrentState = DesiredState
Resource = PoolState | QueueState | LimitState
# What a change compares, per kind: (word in the plan line, attribute).
_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {
    PoolState: (("concurrency", "concurrency_limit"),),
    QueueState: (("concurrency", "concurrency_limit"), ("priority", "priority")),
    LimitState: (("limit", "limit"), ("active", "active")),
}
_KINDS = {PoolState: "pool", QueueState: "queue", LimitState: "limit"}


def _label(resource: Resource) -> str:
    return f"{resource.pool}/{resource.name}" if isinstance(resource, QueueState) else resource.name


def _show(value: object) -> str:
    return "unlimited" if value is None else str(value).lower()


@dataclass(frozen=True)
class Change:
    """One create or update; ``target`` is the wanted resource, ``diffs`` (what, old, new)."""

    action: Literal["create", "update"]
    target: Resource
    diffs: tuple[tuple[str, object, object], ...] = ()

    @property
    def kind(self) -> str:
        return _KINDS[type(self.target)]

    def __str__(self) -> str:
        head = f"{self.action} {self.kind} {_label(self.target)}"
        if self.action == "update":
            return head + " " + ", ".join(f"{what} {_show(old)} -> {_show(new)}"
                                          for what, old, new in self.diffs)
        fields = [f"{word} {_show(getattr(self.target, attr))}"
                  for word, attr in _FIELDS[type(self.target)] if word != "active"]
        extra = [f"type {self.target.type}"] if isinstance(self.target, PoolState) else []
        return f"{head} ({', '.join(extra + fields)})"


def desired_state(config: TeamsConfig) -> DesiredState:
    """The Prefect objects the file implies: per pool its capacity, and per team and pool a
    queue and a global limit, both set to the team's quota.

    With the fair-share controller on, each team has a high, a normal and a low queue per
    pool (priorities 3p-2, 3p-1, 3p for team priority p: teams in their order, and within a
    team high first); they start at the quota (normal) and 0, and the controller moves them.
    """
    pools = tuple(PoolState(name, pool.type, pool.capacity) for name, pool in config.pools.items())
    if config.fairshare and config.fairshare.enabled:
        queues = tuple(
            QueueState(pool, queue_name(team.name, level),
                       team.quota(pool) if level == "normal" else 0, 3 * team.priority - 2 + rank)
            for pool in config.pools for team in config.teams
            for rank, level in enumerate(PRIORITIES))
    else:
        queues = tuple(QueueState(pool, queue_name(team.name), team.quota(pool), team.priority)
                       for pool in config.pools for team in config.teams)
    limits = tuple(LimitState(limit_name(team.name, pool), team.quota(pool))
                   for pool in config.pools for team in config.teams)
    return DesiredState(pools, queues, limits, bool(config.fairshare and config.fairshare.enabled))


def plan_changes(desired: DesiredState, current: CurrentState) -> list[Change]:
    """Creates and updates that turn ``current`` into ``desired``; empty when they agree.

    Order matters to the applier: pools before their queues, and a pool's queues by rising
    priority, since Prefect moves a queue whose priority another queue takes.
    """
    pools = {pool.name: pool for pool in current.pools}
    queues = {(queue.pool, queue.name): queue for queue in current.queues}
    limits = {limit.name: limit for limit in current.limits}
    order = {pool.name: index for index, pool in enumerate(desired.pools)}
    changes = [_diff(pool, pools.get(pool.name)) for pool in desired.pools]
    skip = ("concurrency",) if desired.controller_owns_limits else ()
    changes += [_diff(queue, queues.get((queue.pool, queue.name)), skip)
                for queue in sorted(desired.queues, key=lambda q: (order[q.pool], q.priority))]
    changes += [_diff(limit, limits.get(limit.name)) for limit in desired.limits]
    return [change for change in changes if change is not None]


def _diff(want: Resource, have: Resource | None, skip: tuple[str, ...] = ()) -> Change | None:
    if have is None:
        return Change("create", want)
    pairs = ((word, getattr(have, attr), getattr(want, attr))
             for word, attr in _FIELDS[type(want)] if word not in skip)
    diffs = tuple((word, old, new) for word, old, new in pairs if old != new)
    return Change("update", want, diffs) if diffs else None


def find_unmanaged(desired: DesiredState, current: CurrentState) -> list[str]:
    """Queues and ``team:<team>:<pool>`` limits of the declared pools that the file does not
    declare (other pools are outside the file's scope).

    They are reported, never deleted: a queue may still hold runs of a removed team.
    """
    pools = {pool.name for pool in desired.pools}
    queues = {(queue.pool, queue.name) for queue in desired.queues}
    limits = {limit.name for limit in desired.limits}
    lines = [f"unmanaged queue {queue.pool}/{queue.name} (not in the teams file; left in place)"
             for queue in current.queues
             if queue.pool in pools and (queue.pool, queue.name) not in queues]
    lines += [f"unmanaged limit {limit.name} (not in the teams file; left in place)"
              for limit in current.limits
              if limit.name.startswith(LIMIT_PREFIX) and limit.name not in limits
              and limit.name.rsplit(":", 1)[-1] in pools]
    return lines
