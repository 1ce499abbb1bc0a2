"""Teams as code: the pools and teams file and its validation.

One YAML file (``infra/teams.yaml``) declares the work pools with their capacity and the
teams with their weight, priority, per-pool quota and budget. This module reads it and
refuses an invalid file with every problem listed at once. ``plan`` turns it into the
Prefect objects it implies (``desired_state``) and compares those with what a server holds
(``plan_changes``); ``infra/provision.py`` reads the server and applies the plan.

Rules, and why:

- Quotas are Kueue's nominal quotas: a team's guaranteed share of a pool. Each is an integer
  from 0 to the pool's capacity, every team states one for every pool, and the quotas in a
  pool may sum to at most its capacity (as Kueue requires), so every guarantee can be met
  at once. Idle capacity is lent by the fair-share controller, not by over-subscription.
- Priorities are unique across teams: each team has one queue in each pool, and Prefect's
  queue priorities are unique integers per pool (a duplicate silently shifts other queues).
- A team named ``default`` must exist: the training pipeline runs as it unless told otherwise,
  and its queue is the pool's own ``default`` queue.
- Borrowing and lending limits (per pool, optional) bound what the fair-share controller
  lends: a team holds at most its quota plus its borrowing limit, and others use at most
  its lending limit of its unused quota. The ``fairshare`` section (optional) turns the
  controller on; then each team also gets a ``<team>-high`` and a ``<team>-low`` queue in
  every pool, and the controller, not the file, owns the queues' concurrency limits.
- The plan only creates and updates. Queues and ``team:`` limits of the declared pools that
  the file does not declare are reported as unmanaged and left in place, so removing a team
  from the file never cancels its runs; delete them by hand once they are drained.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
DEFAULT_TEAM = "default"
LIMIT_PREFIX = "team:"
_NAME_RULE = "must be lower case letters, digits and dashes, starting with a letter (<= 40)"
_TOP_KEYS = ("pools", "teams")
_OPTIONAL_KEYS = ("fairshare", "platform")
# Who may do what in a team, its approvals and its data: read by mlops.governance.
GOVERNANCE_TEAM_KEYS = ("members", "service_accounts", "approval", "data")
# Its drift policy: read by mlops.monitoring.policy.
MONITORING_TEAM_KEYS = ("drift",)
OTHER_TEAM_KEYS = (*GOVERNANCE_TEAM_KEYS, *MONITORING_TEAM_KEYS)
PRIORITY_SUFFIXES = ("-high", "-low")  # queue names of a team's high and low priority runs


def queue_name(team: str, priority: str = "normal") -> str:
    """The work queue a team's runs of a priority go to, in every pool (the pool scopes the
    name): the team's name for normal runs, ``<team>-high`` and ``<team>-low`` otherwise."""
    return team if priority == "normal" else f"{team}-{priority}"


def limit_name(team: str, pool: str) -> str:
    """The global concurrency limit holding a team's quota of a pool."""
    return f"{LIMIT_PREFIX}{team}:{pool}"


class TeamsConfigError(ValueError):
    """A teams file that cannot be applied; ``problems`` lists every reason, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class PoolConfig(BaseModel):
    """A work pool: how many runs it holds at once."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    capacity: int = Field(ge=1, description="Runs the pool holds at once (its concurrency).")
    type: str = Field("process", min_length=1,
                      description="Work pool type used when the pool is created; "
                      "an existing pool's type is never changed.")


class TeamConfig(BaseModel):
    """A team: its name, fair-share weight, queue priority, per-pool quota and budget."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Lower case, digits and dashes.")
    weight: float = Field(gt=0, description="Share of idle capacity relative to other teams.")
    priority: int = Field(ge=1, description="Queue priority in every pool; 1 is served first.")
    quotas: dict[str, Annotated[int, Field(ge=0)]] = Field(
        description="Guaranteed concurrent runs per pool name.")
    budget_gpu_hours: float | None = Field(None, ge=0, description="GPU hours per period.")
    borrowing_limits: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Most runs above its quota per pool (none: no limit).")
    lending_limits: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Most of its unused quota others may use per pool "
        "(none: all of it).")

    def quota(self, pool: str) -> int:
        """The team's quota of a pool (0 where it has none)."""
        return self.quotas.get(pool, 0)


class FairShareConfig(BaseModel):
    """The fair-share controller: how often it decides and what it may do."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool = Field(True, description="Run the controller (`make up` starts it).")
    period_s: float = Field(10.0, ge=1, description="Seconds between decisions.")
    preemption: bool = Field(False, description="Cancel and requeue the newest borrowed runs "
                             "when a team below its guarantee is waiting.")
    over_budget: Literal["borrow", "hold"] = Field(
        "borrow", description="A team over its GPU-hour budget keeps no guarantee and may only "
        "borrow idle capacity (borrow), or starts nothing until the next period (hold).")
    budget_period: Literal["day", "week", "month"] = Field("month", description="UTC period.")
    budget_pool: str = Field("gpu", description="The pool whose run time is metered.")
    gpus_per_run: int = Field(1, ge=1, description="GPUs one run of the metered pool holds.")


class TeamsConfig(BaseModel):
    """The whole file: pools by name and the teams that share them."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    pools: dict[str, PoolConfig]
    teams: list[TeamConfig]
    fairshare: FairShareConfig | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> TeamsConfig:
        capacities = {name: pool.capacity for name, pool in self.pools.items()}
        facts = [_facts(team.model_dump(), f"team {team.name}") for team in self.teams]
        problems = _cross_problems(capacities, facts)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def team(self, name: str) -> TeamConfig:
        """The team of that name; KeyError names the known ones."""
        for team in self.teams:
            if team.name == name:
                return team
        raise KeyError(f"unknown team {name!r}; known: {', '.join(t.name for t in self.teams)}")


def load_teams(path: str | Path) -> TeamsConfig:
    """Read and validate a teams file; TeamsConfigError lists every problem found."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise TeamsConfigError(source, [f"cannot read the file: {exc}"]) from exc
    except yaml.YAMLError as exc:
        raise TeamsConfigError(source, [f"not valid YAML: {exc}"]) from exc
    return parse_teams(raw, source)


def parse_teams(raw: Any, source: str = "teams file") -> TeamsConfig:
    """Validate already parsed YAML, collecting the problems of every part before refusing."""
    if not isinstance(raw, dict):
        raise TeamsConfigError(source, ["the file must be a mapping with keys pools and teams"])
    problems = [f"unknown key {key!r} at the top level (allowed: pools, teams, fairshare, "
                "platform)"
                for key in raw if key not in _TOP_KEYS + _OPTIONAL_KEYS]
    problems += [f"missing key {key!r} at the top level" for key in _TOP_KEYS if key not in raw]
    pools, pool_problems = _parse_pools(raw.get("pools", {}))
    teams, facts, team_problems = _parse_team_list(raw.get("teams", []))
    capacities = {name: pool.capacity if pool else None for name, pool in pools.items()}
    fairshare, fairshare_problems = _parse_fairshare(raw.get("fairshare"), capacities)
    problems += pool_problems + team_problems + fairshare_problems
    problems += _cross_problems(capacities, facts)
    if problems:
        raise TeamsConfigError(source, problems)
    return TeamsConfig(pools={name: pool for name, pool in pools.items() if pool}, teams=teams,
                       fairshare=fairshare)


def _parse_fairshare(raw: Any, pools: dict[str, int | None]
                     ) -> tuple[FairShareConfig | None, list[str]]:
    if raw is None:
        return None, []
    try:
        config = FairShareConfig.model_validate(raw)
    except ValidationError as exc:
        return None, [_describe("fairshare", error) for error in exc.errors()]
    if config.budget_pool not in pools:
        return None, [f"fairshare: budget_pool {config.budget_pool!r} is not a declared pool"]
    return config, []


def _parse_pools(raw: Any) -> tuple[dict[str, PoolConfig | None], list[str]]:
    """Each pool on its own, so one bad pool does not hide the others' problems.

    A declared but invalid pool maps to None: teams may still name it without a second error.
    """
    if not isinstance(raw, dict) or not raw:
        return {}, ["pools must be a non-empty mapping of pool name to {capacity: N}"]
    pools: dict[str, PoolConfig | None] = {}
    problems: list[str] = []
    for name, body in raw.items():
        label = f"pool {name}"
        pools[str(name)] = None
        if not (isinstance(name, str) and re.match(NAME_PATTERN, name)):
            problems.append(f"{label}: name {name!r} {_NAME_RULE}")
        try:
            pools[str(name)] = PoolConfig.model_validate(body)
        except ValidationError as exc:
            problems += [_describe(label, error) for error in exc.errors()]
    return pools, problems


def _parse_team_list(raw: Any) -> tuple[list[TeamConfig], list[_TeamFacts], list[str]]:
    """Each team on its own: the valid teams, the facts of every team, and the problems."""
    if not isinstance(raw, list) or not raw:
        return [], [], ["teams must be a non-empty list of teams"]
    teams: list[TeamConfig] = []
    facts: list[_TeamFacts] = []
    problems: list[str] = []
    for index, body in enumerate(raw):
        if not isinstance(body, dict):
            problems.append(f"teams[{index}]: must be a mapping, got {body!r}")
            continue
        name = body.get("name")
        label = f"team {name}" if isinstance(name, str) else f"teams[{index}]"
        facts.append(_facts(body, label))
        try:
            teams.append(TeamConfig.model_validate(
                {key: value for key, value in body.items() if key not in OTHER_TEAM_KEYS}))
        except ValidationError as exc:
            problems += [_describe(label, error) for error in exc.errors()]
    return teams, facts, problems


@dataclass(frozen=True)
class _TeamFacts:
    """What the checks across teams and pools need from one team, read leniently so that
    one invalid key does not hide the team's other problems (invalid values are left out)."""

    label: str
    name: str | None
    priority: int | None
    quotas: dict[str, int]
    declared: frozenset[str] | None  # pools it gives a quota for, valid or not
    limited: frozenset[str] = frozenset()  # pools it gives a borrowing or lending limit for


def _facts(body: dict[str, Any], label: str) -> _TeamFacts:
    raw_quotas = body.get("quotas")
    quotas = raw_quotas if isinstance(raw_quotas, dict) else {}
    name = body.get("name")
    return _TeamFacts(
        label=label, name=name if isinstance(name, str) else None,
        priority=_count(body.get("priority"), 1),
        quotas={str(pool): quota for pool, quota in quotas.items()
                if _count(quota, 0) is not None},
        declared=frozenset(map(str, quotas)) if isinstance(raw_quotas, dict) else None,
        limited=frozenset(str(pool) for key in ("borrowing_limits", "lending_limits")
                          if isinstance(body.get(key), dict) for pool in body[key]))


def _count(value: Any, low: int) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    return value if ok else None


def _cross_problems(capacities: dict[str, int | None], teams: list[_TeamFacts]) -> list[str]:
    """Problems between teams and pools: names, unknown or missing pools, quotas, priorities."""
    problems = _name_problems([team.name for team in teams if team.name is not None])
    for team in teams:
        problems += [f"{team.label}: quota for unknown pool {pool!r} (declare it under pools)"
                     for pool in sorted(team.declared or ()) if pool not in capacities]
        problems += [f"{team.label}: borrowing or lending limit for unknown pool {pool!r}"
                     for pool in sorted(team.limited) if pool not in capacities]
        if team.declared is not None:
            problems += [f"{team.label}: no quota for pool {pool!r} (use 0 for none)"
                         for pool in capacities if pool not in team.declared]
    for pool, capacity in capacities.items():
        if capacity is not None:
            problems += _capacity_problems(pool, capacity, teams)
    for priority, count in Counter(team.priority for team in teams).items():
        if priority is not None and count > 1:
            holders = ", ".join(t.name or t.label for t in teams if t.priority == priority)
            problems.append(f"priority {priority} is not unique (teams {holders}): Prefect "
                            "queue priorities are unique integers per pool")
    return problems


def _name_problems(names: list[str]) -> list[str]:
    """Duplicate team names, and the default team the pipeline relies on."""
    problems = [f"duplicate team name {name!r} ({count} teams)"
                for name, count in Counter(names).items() if count > 1]
    problems += [f"team name {name!r} must not end in {', '.join(PRIORITY_SUFFIXES)}: those "
                 "name a team's priority queues" for name in names
                 if name.endswith(PRIORITY_SUFFIXES)]
    if DEFAULT_TEAM not in names:
        problems.append(f"no team named {DEFAULT_TEAM!r}: the training pipeline runs as it "
                        "by default")
    return problems


def _capacity_problems(pool: str, capacity: int, teams: list[_TeamFacts]) -> list[str]:
    """Each quota and the sum of quotas must fit the pool's capacity."""
    quotas = [(team, team.quotas.get(pool, 0)) for team in teams]
    problems = [f"{team.label}: quota {quota} for pool {pool!r} is above the pool's "
                f"capacity {capacity}" for team, quota in quotas if quota > capacity]
    total = sum(quota for _, quota in quotas)
    if total > capacity:
        problems.append(f"pool {pool}: quotas sum to {total}, above its capacity {capacity} "
                        "(guaranteed quotas must all fit at once)")
    return problems



def _describe(label: str, error: Any) -> str:
    """One pydantic error as a line a person can act on."""
    where = ".".join(str(part) for part in error["loc"])
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return f"{label}: unknown key {where!r}"
    if kind == "missing":
        return f"{label}: missing key {where!r}"
    if kind == "int_type":
        return f"{label}: {where} must be a whole number, got {value!r}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = error["ctx"].get("ge", error["ctx"].get("gt"))
        if kind == "greater_than_equal" and bound == 0:
            return f"{label}: {where} must not be negative, got {value!r}"
        sign = ">=" if kind == "greater_than_equal" else ">"
        return f"{label}: {where} must be {sign} {bound}, got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{label}: {where} {value!r} {_NAME_RULE}"
    return f"{label}: {where}: {error['msg']}"
