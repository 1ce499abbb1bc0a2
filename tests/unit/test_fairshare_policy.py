"""The fair-share policy: properties over random pools, plus worked examples.

The oracles here (guarantee, ceiling, reserved) are written out again from the module
docstring rather than imported, so a wrong helper in ``mlops/fairshare/policy.py`` cannot make its
own test pass.
"""

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops.fairshare.policy import (
    PRIORITIES,
    PoolPlan,
    RunningRun,
    TeamPolicy,
    allocate,
    check_pool,
    headroom,
    plan_pool,
    select_preemptions,
    split_by_priority,
)

SETTINGS = settings(max_examples=200, deadline=None)
WEIGHTS = st.sampled_from([0.5, 1.0, 2.0, 3.0]) | st.floats(0.1, 10.0)
LIMITS = st.none() | st.integers(0, 10)
Pool = tuple[int, list[TeamPolicy], dict[str, int]]


@st.composite
def teams_for(draw: st.DrawFn, capacity: int) -> list[TeamPolicy]:
    """1-6 teams whose quotas sum to at most the capacity."""
    teams, left = [], capacity
    for index in range(draw(st.integers(1, 6))):
        quota = min(draw(st.integers(0, capacity)), left)
        left -= quota
        teams.append(TeamPolicy(f"t{index}", draw(WEIGHTS), quota, draw(LIMITS), draw(LIMITS),
                                draw(st.booleans())))
    return teams


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    """A capacity, its teams and their demand (a team may be missing from the demand)."""
    capacity = draw(st.integers(0, 64))
    teams = draw(teams_for(capacity))
    demand = {t.name: draw(st.integers(0, 80)) for t in teams if draw(st.integers(0, 9))}
    return capacity, teams, demand


def want(team: TeamPolicy, demand: Mapping[str, int]) -> int:
    return demand.get(team.name, 0)


def guaranteed(team: TeamPolicy, demand: int) -> int:
    return 0 if team.over_budget else min(team.quota, demand)


def top(team: TeamPolicy, demand: int) -> int:
    """The most a team may hold: its demand, at most quota + borrowing limit."""
    if team.borrowing_limit is None:
        return demand
    return min(demand, team.quota + team.borrowing_limit)


def kept_idle(team: TeamPolicy, demand: int) -> int:
    """Unused quota beyond the lending limit of a team within budget."""
    if team.over_budget or team.lending_limit is None:
        return 0
    return max(0, team.quota - min(team.quota, demand) - team.lending_limit)


def idle_left(pool: Pool, allocation: Mapping[str, int]) -> int:
    """Slots neither allocated nor kept idle for a team that does not lend them."""
    capacity, teams, demand = pool
    return capacity - sum(allocation.values()) - sum(kept_idle(t, want(t, demand)) for t in teams)


# allocate


@SETTINGS
@given(pools())
def test_allocation_never_exceeds_capacity(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    assert set(allocation) == {t.name for t in teams}
    assert sum(allocation.values()) <= capacity, f"{allocation} over capacity {capacity}"
    raised = headroom(capacity, teams, allocation)
    assert sum(raised.values()) <= capacity, f"headroom {raised} over capacity {capacity}"


@SETTINGS
@given(pools())
def test_team_within_budget_gets_its_guarantee(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    for team in teams:
        if not team.over_budget:
            floor = min(team.quota, want(team, demand))
            assert allocation[team.name] >= floor, (
                f"{team.name} got {allocation[team.name]}, below its guarantee {floor}")


@SETTINGS
@given(pools())
def test_allocation_within_demand_and_borrowing_limit(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    for team in teams:
        got, wanted = allocation[team.name], want(team, demand)
        assert got <= wanted, f"{team.name} got {got}, above its demand {wanted}"
        if got > guaranteed(team, wanted) and team.borrowing_limit is not None:
            assert got <= team.quota + team.borrowing_limit, (
                f"{team.name} got {got}, above quota {team.quota} + borrowing limit "
                f"{team.borrowing_limit}")


@SETTINGS
@given(pools())
def test_unlent_quota_stays_idle(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    kept = sum(kept_idle(t, want(t, demand)) for t in teams)
    assert capacity - sum(allocation.values()) >= kept, (
        f"{allocation} leaves {capacity - sum(allocation.values())} idle, but teams keep {kept} "
        "of their unused quota beyond their lending limits")


@SETTINGS
@given(pools())
def test_work_conserving(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    if idle_left(pool, allocation) > 0:
        for team in teams:
            assert allocation[team.name] == top(team, want(team, demand)), (
                f"{idle_left(pool, allocation)} slots idle while {team.name} holds "
                f"{allocation[team.name]} below its ceiling {top(team, want(team, demand))}")


@SETTINGS
@given(pools())
def test_weighted_max_min_envy_free_up_to_one_slot(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    within = [t for t in teams if not t.over_budget]
    for i in within:
        if allocation[i.name] >= top(i, want(i, demand)):
            continue  # not backlogged: it may hold less than its share
        for j in within:
            a_i, a_j = allocation[i.name], allocation[j.name]
            if j is i or a_j <= guaranteed(j, want(j, demand)):
                continue
            assert a_j / j.weight <= (a_i + 1) / i.weight + 1e-9, (
                f"{j.name} holds {a_j} at weight {j.weight} while backlogged {i.name} holds "
                f"{a_i} at weight {i.weight}: {j.name} got a borrowed slot {i.name} should have")


@SETTINGS
@given(pools())
def test_over_budget_teams_only_get_what_teams_within_budget_leave(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    over = {t.name: allocation[t.name] for t in teams if t.over_budget and allocation[t.name]}
    if over:
        for team in teams:
            if not team.over_budget:
                assert allocation[team.name] == top(team, want(team, demand)), (
                    f"over-budget teams hold {over} while {team.name} holds "
                    f"{allocation[team.name]}, below its ceiling")


def test_weights_split_a_pool_without_quotas():
    teams = [TeamPolicy("a", 1.0), TeamPolicy("b", 2.0), TeamPolicy("c", 1.0)]
    assert allocate(8, teams, {"a": 10, "b": 10, "c": 10}) == {"a": 2, "b": 4, "c": 2}


def test_borrowing_limit_leaves_slots_idle():
    teams = [TeamPolicy("a", quota=6), TeamPolicy("b", quota=4, borrowing_limit=3)]
    assert allocate(10, teams, {"a": 2, "b": 20}) == {"a": 2, "b": 7}


def test_lending_limit_keeps_unused_quota_for_its_team():
    teams = [TeamPolicy("a", quota=6, lending_limit=2), TeamPolicy("b", quota=4)]
    assert allocate(10, teams, {"a": 0, "b": 20}) == {"a": 0, "b": 6}


def test_over_budget_team_loses_its_guarantee():
    teams = [TeamPolicy("a", quota=5, over_budget=True), TeamPolicy("b", quota=5)]
    assert allocate(10, teams, {"a": 10, "b": 8}) == {"a": 2, "b": 8}


# headroom


@SETTINGS
@given(pools())
def test_headroom_raises_only_up_to_unused_quota_and_keeps_reserved_slots(pool):
    capacity, teams, demand = pool
    allocation = allocate(capacity, teams, demand)
    raised = headroom(capacity, teams, allocation)
    for team in teams:
        name, cap = team.name, 0 if team.over_budget else team.quota
        assert allocation[name] <= raised[name] <= max(allocation[name], cap), (
            f"{name}: headroom {raised[name]} outside [{allocation[name]}, its unused quota]")
        kept = kept_idle(team, want(team, demand))
        assert raised[name] >= allocation[name] + kept, (
            f"{name}: headroom {raised[name]} gives away the {kept} slots it does not lend")


def test_headroom_gives_unlent_quota_to_its_owner_first():
    teams = [TeamPolicy("a", quota=4, lending_limit=0), TeamPolicy("b", quota=4),
             TeamPolicy("c", quota=4)]
    allocation = allocate(12, teams, {"b": 20})
    assert allocation == {"a": 0, "b": 8, "c": 0}
    assert headroom(12, teams, allocation) == {"a": 4, "b": 8, "c": 0}


# split_by_priority

COUNTS = st.dictionaries(st.sampled_from(PRIORITIES), st.integers(0, 10))


def startable(limits: Mapping[str, int], running: Mapping[str, int],
              queued: Mapping[str, int], priority: str) -> int:
    """Queued runs of one priority that Prefect would start now under these limits."""
    return min(queued.get(priority, 0), max(0, limits[priority] - running.get(priority, 0)))


@SETTINGS
@given(st.integers(0, 20), COUNTS, COUNTS)
def test_split_never_lets_a_team_hold_more_than_allowed(allowed, running, queued):
    limits = split_by_priority(allowed, running, queued)
    assert set(limits) == set(PRIORITIES) and min(limits.values()) >= 0, limits
    holdable = sum(max(limits[p], running.get(p, 0)) for p in PRIORITIES)
    held = sum(running.values())
    assert holdable <= max(allowed, held), (
        f"limits {limits} let the team hold {holdable} with {allowed} allowed, {held} running")


@SETTINGS
@given(st.integers(0, 20), COUNTS, COUNTS)
def test_split_starts_every_queued_run_the_allowance_covers(allowed, running, queued):
    held = sum(running.values())
    if held > allowed:
        return
    limits = split_by_priority(allowed, running, queued)
    starts = sum(startable(limits, running, queued, p) for p in PRIORITIES)
    expected = min(sum(queued.values()), allowed - held)
    assert starts == expected, (
        f"limits {limits} start {starts} queued runs, the allowance covers {expected}")


@SETTINGS
@given(st.integers(0, 20), COUNTS, COUNTS)
def test_split_serves_higher_priority_first(allowed, running, queued):
    limits = split_by_priority(allowed, running, queued)
    for index, priority in enumerate(PRIORITIES):
        if queued.get(priority, 0) > startable(limits, running, queued, priority):
            for lower in PRIORITIES[index + 1:]:
                assert limits[lower] <= running.get(lower, 0), (
                    f"{priority} runs wait while the {lower} queue may start one: {limits}")


def test_split_example():
    limits = split_by_priority(5, {"low": 3}, {"high": 4, "low": 2})
    assert limits == {"high": 2, "normal": 0, "low": 1}  # low holds 3, its share 1: no refill


# select_preemptions


def make_runs(draw: st.DrawFn, teams: Sequence[TeamPolicy]) -> list[RunningRun]:
    runs = []
    for team in teams:
        for _ in range(draw(st.integers(0, 10))):
            runs.append(RunningRun(f"r{len(runs)}", team.name, draw(st.integers(0, 50)),
                                   draw(st.sampled_from(PRIORITIES))))
    return runs


@st.composite
def preemption_cases(draw: st.DrawFn):
    """Teams, allocation, running runs (possibly over a shrunk capacity) and queued counts."""
    capacity = draw(st.integers(0, 64))
    teams = draw(teams_for(capacity))
    running = make_runs(draw, teams)
    queued = {t.name: draw(st.integers(0, 20)) for t in teams}
    held = {t.name: sum(r.team == t.name for r in running) for t in teams}
    allocation = allocate(capacity, teams, {n: held[n] + queued[n] for n in held})
    return capacity, teams, allocation, running, queued, held


def owed(teams, allocation, held, queued) -> int:
    """Slots teams within budget are short of min(guarantee, allocation)."""
    return sum(max(0, min(guaranteed(t, held[t.name] + queued[t.name]), allocation[t.name])
                   - held[t.name]) for t in teams)


@SETTINGS
@given(preemption_cases())
def test_preemption_takes_only_borrowed_runs(case):
    capacity, teams, allocation, running, queued, held = case
    victims = select_preemptions(teams, allocation, running, queued, capacity)
    assert len({v.id for v in victims}) == len(victims), "a run is preempted twice"
    assert {v.id for v in victims} <= {r.id for r in running}
    for team in teams:
        taken = sum(v.team == team.name for v in victims)
        assert taken <= max(0, held[team.name] - allocation[team.name]), (
            f"{taken} runs preempted from {team.name}, which holds {held[team.name]} "
            f"of its allocation {allocation[team.name]}")


@SETTINGS
@given(preemption_cases())
def test_preemption_only_when_free_slots_fall_short(case):
    capacity, teams, allocation, running, queued, held = case
    victims = select_preemptions(teams, allocation, running, queued, capacity)
    short = owed(teams, allocation, held, queued)
    if short <= capacity - len(running):
        assert victims == [], f"{len(victims)} preempted though free slots cover {short} owed"


@SETTINGS
@given(preemption_cases())
def test_after_preemption_every_team_reaches_its_guarantee(case):
    capacity, teams, allocation, running, queued, held = case
    victims = select_preemptions(teams, allocation, running, queued, capacity)
    after = {n: held[n] - sum(v.team == n for v in victims) for n in held}
    still_owed = owed(teams, allocation, after, {n: queued[n] + held[n] - after[n] for n in held})
    free = capacity - (len(running) - len(victims))
    assert still_owed <= max(0, free), (
        f"after preempting {len(victims)}, teams are owed {still_owed} with {free} slots free")


@SETTINGS
@given(preemption_cases())
def test_preemption_is_minimal(case):
    capacity, teams, allocation, running, queued, held = case
    victims = select_preemptions(teams, allocation, running, queued, capacity)
    if victims:
        short = owed(teams, allocation, held, queued)
        free_with_one_fewer = capacity - len(running) + len(victims) - 1
        assert short > free_with_one_fewer, (
            f"{len(victims)} preempted where {len(victims) - 1} would have freed enough")


@SETTINGS
@given(preemption_cases())
def test_preemption_takes_low_priority_then_newest_first(case):
    capacity, teams, allocation, running, queued, held = case
    victims = select_preemptions(teams, allocation, running, queued, capacity)
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    chosen = {v.id for v in victims}
    for victim in victims:
        for kept in running:
            if kept.team == victim.team and kept.id not in chosen:
                assert (rank[victim.priority], victim.started_at) >= (
                    rank[kept.priority], kept.started_at), (
                    f"preempted {victim} but kept {kept}: lower priority or newer")


def test_preemption_example_takes_the_newest_borrowed_runs():
    teams = [TeamPolicy("a", quota=2), TeamPolicy("b", quota=2)]
    running = [RunningRun(f"b{i}", "b", started_at=float(i)) for i in range(4)]
    allocation = allocate(4, teams, {"a": 2, "b": 4})
    victims = select_preemptions(teams, allocation, running, {"a": 2, "b": 0}, 4)
    assert [v.id for v in victims] == ["b3", "b2"]


def test_preemption_covers_a_shrunk_capacity():
    teams = [TeamPolicy("a", quota=2), TeamPolicy("b", quota=2)]
    running = [RunningRun(f"b{i}", "b", started_at=float(i)) for i in range(6)]
    allocation = allocate(4, teams, {"a": 2, "b": 6})
    victims = select_preemptions(teams, allocation, running, {"a": 2, "b": 0}, 4)
    assert [v.id for v in victims] == ["b5", "b4", "b3", "b2"]  # 2 over capacity, 2 owed to a


# plan_pool


@st.composite
def plan_cases(draw: st.DrawFn):
    capacity = draw(st.integers(0, 64))
    teams = draw(teams_for(capacity))
    running = make_runs(draw, teams)
    queued = {t.name: draw(COUNTS) for t in teams}
    return capacity, teams, running, queued, draw(st.booleans())


@SETTINGS
@given(plan_cases())
def test_plan_limits_sum_within_capacity(case):
    """Stronger than needed: holds even while teams still hold runs above their allocation."""
    capacity, teams, running, queued, preemption = case
    plan = plan_pool(capacity, teams, running, queued, preemption)
    total = sum(sum(by.values()) for by in plan.queue_limits.values())
    assert total <= capacity, f"queue limits sum to {total} over capacity {capacity}: {plan}"


@SETTINGS
@given(plan_cases())
def test_plan_is_deterministic_and_uses_the_allocation(case):
    capacity, teams, running, queued, preemption = case
    plan = plan_pool(capacity, teams, running, queued, preemption)
    assert plan == plan_pool(capacity, teams, running, queued, preemption)
    held = {t.name: sum(r.team == t.name for r in running) for t in teams}
    demand = {n: held[n] + sum(queued[n].values()) for n in held}
    assert plan.allocation == allocate(capacity, teams, demand)
    if not preemption:
        assert plan.preempt == []


def test_plan_example_borrows_then_reclaims():
    teams = [TeamPolicy("a", quota=2), TeamPolicy("b", quota=2)]
    running = [RunningRun(f"b{i}", "b", started_at=float(i)) for i in range(4)]
    plan = plan_pool(4, teams, running, {"a": {"high": 2}}, preemption=True)
    assert plan == PoolPlan({"a": 2, "b": 2},
                            {"a": {"high": 2, "normal": 0, "low": 0},
                             "b": {"high": 0, "normal": 2, "low": 0}},
                            [running[3], running[2]])
    assert plan.borrowed(teams) == {"a": 0, "b": 0}


# check_pool


@pytest.mark.parametrize(("capacity", "teams", "demand", "problem"), [
    (-1, [TeamPolicy("a")], {}, "capacity must not be negative"),
    (4, [TeamPolicy("a", quota=3), TeamPolicy("b", quota=2)], {}, "quotas sum to 5"),
    (4, [TeamPolicy("a"), TeamPolicy("a")], {}, "duplicate team 'a'"),
    (4, [TeamPolicy("a")], {"z": 1}, "unknown team 'z'"),
    (4, [TeamPolicy("a", weight=0)], {}, "weight must be > 0"),
    (4, [TeamPolicy("a", weight=float("nan"))], {}, "weight must be > 0"),
    (4, [TeamPolicy("a")], {"a": -1}, "demand must not be negative"),
    (4, [TeamPolicy("a", borrowing_limit=-1)], {}, "borrowing_limit must not be negative"),
])
def test_check_pool_names_the_problem(capacity, teams, demand, problem):
    with pytest.raises(ValueError, match=problem):
        check_pool(capacity, teams, demand)
    with pytest.raises(ValueError, match=problem):
        allocate(capacity, teams, demand)
