"""The teams file: every invalid case named in one error, and the plan that applies it."""

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mlops.fairshare.plan import (
    DesiredState,
    LimitState,
    PoolState,
    QueueState,
    desired_state,
    find_unmanaged,
    plan_changes,
)
from mlops.fairshare.teams import (
    TeamsConfig,
    TeamsConfigError,
    limit_name,
    load_teams,
    parse_teams,
)

REPO_FILE = Path(__file__).parents[2] / "infra" / "teams.yaml"
BASE = {
    "pools": {"gpu": {"capacity": 4}, "cpu": {"capacity": 8}},
    "teams": [
        {"name": "vision", "weight": 2, "priority": 1, "quotas": {"gpu": 2, "cpu": 3},
         "budget_gpu_hours": 100},
        {"name": "nlp", "weight": 1, "priority": 2, "quotas": {"gpu": 1, "cpu": 3}},
        {"name": "default", "weight": 1, "priority": 3, "quotas": {"gpu": 1, "cpu": 2}},
    ],
}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(TeamsConfigError) as caught:
        parse_teams(raw)
    return caught.value.problems


def _with(**team_changes: object) -> dict:
    """BASE with the first team (vision) changed."""
    raw = copy.deepcopy(BASE)
    raw["teams"][0].update(team_changes)
    return raw


def test_repository_file_is_valid() -> None:
    config = load_teams(REPO_FILE)
    assert {team.name for team in config.teams} >= {"default"}
    assert set(config.pools) == {"gpu", "cpu"}
    for pool, spec in config.pools.items():
        assert sum(team.quota(pool) for team in config.teams) <= spec.capacity


def test_base_is_valid() -> None:
    config = parse_teams(copy.deepcopy(BASE))
    assert config.team("vision").quota("gpu") == 2
    assert config.team("vision").weight == 2.0


@pytest.mark.parametrize(("raw", "expected"), [
    (_with(colour="red"), "team vision: unknown key 'colour'"),
    ({**copy.deepcopy(BASE), "extra": 1}, "unknown key 'extra' at the top level"),
    (_with(quotas={"gpu": -1, "cpu": 3}), "quotas.gpu must not be negative, got -1"),
    (_with(quotas={"gpu": 1.5, "cpu": 3}), "quotas.gpu must be a whole number, got 1.5"),
    (_with(quotas={"gpu": "2", "cpu": 3}), "quotas.gpu must be a whole number, got '2'"),
    (_with(quotas={"gpu": 5, "cpu": 0}), "quota 5 for pool 'gpu' is above the pool's capacity 4"),
    (_with(quotas={"gpu": 3, "cpu": 3}), "pool gpu: quotas sum to 5, above its capacity 4"),
    (_with(name="nlp"), "duplicate team name 'nlp'"),
    (_with(quotas={"gpu": 1, "cpu": 1, "tpu": 1}), "quota for unknown pool 'tpu'"),
    (_with(quotas={"gpu": 1}), "team vision: no quota for pool 'cpu'"),
    ({"teams": copy.deepcopy(BASE["teams"])}, "missing key 'pools'"),
    (_with(priority=2), "priority 2 is not unique (teams vision, nlp)"),
    (_with(priority=0), "priority must be >= 1, got 0"),
    (_with(weight=0), "weight must be > 0"),
    (_with(name="Vision_1"), "name 'Vision_1' must be lower case letters"),
    ({**copy.deepcopy(BASE), "pools": {"gpu": {"capacity": 4, "gpus": 1}, "cpu": {"capacity": 8}}},
     "pool gpu: unknown key 'gpus'"),
    ({**copy.deepcopy(BASE), "teams": copy.deepcopy(BASE["teams"][:2])}, "no team named 'default'"),
])
def test_invalid_file_names_the_problem(raw: dict, expected: str) -> None:
    problems = _problems(raw)
    assert any(expected in problem for problem in problems), problems


def test_every_problem_in_one_error() -> None:
    raw = copy.deepcopy(BASE)
    raw["teams"][0].update(colour="red", quotas={"gpu": -1, "cpu": 9})
    raw["teams"][1].update(name="default", priority=3)
    problems = _problems(raw)
    text = "\n".join(problems)
    for expected in ("unknown key 'colour'", "must not be negative", "duplicate team name",
                     "priority 3 is not unique"):
        assert expected in text
    assert len(problems) >= 4


def test_invalid_team_does_not_hide_pool_problems() -> None:
    raw = _with(quotas={"gpu": -1, "cpu": 3})
    raw["pools"]["cpu"]["capacity"] = 0
    text = "\n".join(_problems(raw))
    assert "must not be negative" in text and "pool cpu: capacity must be >= 1, got 0" in text
    assert "unknown pool" not in text  # a declared but invalid pool is still declared


def test_load_reports_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "teams.yaml"
    bad.write_text("pools: [unclosed")
    with pytest.raises(TeamsConfigError, match="not valid YAML"):
        load_teams(bad)
    with pytest.raises(TeamsConfigError, match="cannot read"):
        load_teams(tmp_path / "absent.yaml")


def test_error_message_lists_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(_with(priority=2, colour="red")))
    with pytest.raises(TeamsConfigError) as caught:
        load_teams(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 2 problem(s)")
    assert message.count("\n  - ") == 2


def test_model_refuses_inconsistent_config_built_in_code() -> None:
    raw = _with(priority=2)
    with pytest.raises(ValidationError, match="not unique"):
        TeamsConfig.model_validate(raw)


def test_desired_state_from_the_file() -> None:
    desired = desired_state(parse_teams(copy.deepcopy(BASE)))
    assert PoolState("gpu", "process", 4) in desired.pools
    assert QueueState("gpu", "vision", 2, 1) in desired.queues
    assert QueueState("cpu", "default", 2, 3) in desired.queues
    assert LimitState("team:nlp:cpu", 3) in desired.limits
    assert limit_name("nlp", "cpu") == "team:nlp:cpu"
    assert (len(desired.pools), len(desired.queues), len(desired.limits)) == (2, 6, 6)


def test_plan_from_empty_creates_everything_in_apply_order() -> None:
    desired = desired_state(parse_teams(copy.deepcopy(BASE)))
    changes = plan_changes(desired, DesiredState())
    assert all(change.action == "create" for change in changes)
    assert [change.kind for change in changes] == ["pool"] * 2 + ["queue"] * 6 + ["limit"] * 6
    lines = [str(change) for change in changes]
    assert lines[0] == "create pool gpu (type process, concurrency 4)"
    assert lines[2:5] == ["create queue gpu/vision (concurrency 2, priority 1)",
                          "create queue gpu/nlp (concurrency 1, priority 2)",
                          "create queue gpu/default (concurrency 1, priority 3)"]
    assert "create limit team:vision:gpu (limit 2)" in lines


def test_no_changes_when_current_equals_desired() -> None:
    desired = desired_state(parse_teams(copy.deepcopy(BASE)))
    assert plan_changes(desired, desired) == []
    assert find_unmanaged(desired, desired) == []


def test_quota_change_updates_exactly_its_queue_and_limit() -> None:
    current = desired_state(parse_teams(copy.deepcopy(BASE)))
    changed = copy.deepcopy(BASE)
    changed["teams"][1]["quotas"]["cpu"] = 1
    changes = plan_changes(desired_state(parse_teams(changed)), current)
    assert [str(change) for change in changes] == [
        "update queue cpu/nlp concurrency 3 -> 1",
        "update limit team:nlp:cpu limit 3 -> 1",
    ]


def test_server_drift_is_planned_back() -> None:
    desired = desired_state(parse_teams(copy.deepcopy(BASE)))
    current = DesiredState(
        pools=(PoolState("gpu", "kubernetes", None), PoolState("cpu", "process", 8)),
        queues=tuple(QueueState(q.pool, q.name, None, q.priority + 1) if q.name == "vision"
                     else q for q in desired.queues),
        limits=tuple(LimitState(lim.name, lim.limit, active=lim.name != "team:nlp:gpu")
                     for lim in desired.limits),
    )
    lines = [str(change) for change in plan_changes(desired, current)]
    assert lines == [
        "update pool gpu concurrency unlimited -> 4",  # the type is never changed
        "update queue gpu/vision concurrency unlimited -> 2, priority 2 -> 1",
        "update queue cpu/vision concurrency unlimited -> 3, priority 2 -> 1",
        "update limit team:nlp:gpu active false -> true",
    ]


def test_unmanaged_are_reported_not_planned() -> None:
    desired = desired_state(parse_teams(copy.deepcopy(BASE)))
    current = DesiredState(
        pools=desired.pools,
        queues=desired.queues + (QueueState("gpu", "old-team", 1, 4),
                                 QueueState("elsewhere", "x", 1, 1)),
        limits=desired.limits + (LimitState("team:old-team:gpu", 1), LimitState("tag:db", 2),
                                 LimitState("team:vision:elsewhere", 1)),
    )
    assert plan_changes(desired, current) == []
    assert find_unmanaged(desired, current) == [
        "unmanaged queue gpu/old-team (not in the teams file; left in place)",
        "unmanaged limit team:old-team:gpu (not in the teams file; left in place)",
    ]


def _fairshare(**section: object) -> dict:
    raw = copy.deepcopy(BASE)
    raw["fairshare"] = {"period_s": 5, **section}
    return raw


def test_fairshare_section_and_limits_are_read() -> None:
    raw = _fairshare(preemption=True, over_budget="hold")
    raw["teams"][0].update(borrowing_limits={"gpu": 1}, lending_limits={"cpu": 2})
    config = parse_teams(raw)
    assert config.fairshare is not None and config.fairshare.preemption
    assert config.fairshare.over_budget == "hold" and config.fairshare.period_s == 5
    assert config.team("vision").borrowing_limits == {"gpu": 1}
    assert parse_teams(copy.deepcopy(BASE)).fairshare is None


@pytest.mark.parametrize(("change", "expected"), [
    ({"fairshare": {"period_s": 0.5}}, "fairshare: period_s must be >= 1"),
    ({"fairshare": {"over_budget": "kill"}}, "fairshare: over_budget"),
    ({"fairshare": {"budget_pool": "tpu"}}, "budget_pool 'tpu' is not a declared pool"),
    ({"fairshare": {"preempt": True}}, "fairshare: unknown key 'preempt'"),
])
def test_invalid_fairshare_section_is_named(change: dict, expected: str) -> None:
    raw = {**copy.deepcopy(BASE), **change}
    assert any(expected in problem for problem in _problems(raw)), _problems(raw)


def test_limits_for_unknown_pools_and_queue_suffixes_are_refused() -> None:
    problems = _problems(_with(borrowing_limits={"tpu": 1}))
    assert "team vision: borrowing or lending limit for unknown pool 'tpu'" in problems
    problems = _problems(_with(name="vision-high"))
    assert any("must not end in -high, -low" in problem for problem in problems), problems


def test_with_fairshare_each_team_has_three_priority_queues_owned_by_the_controller() -> None:
    desired = desired_state(parse_teams(_fairshare()))
    gpu = [(q.name, q.concurrency_limit, q.priority) for q in desired.queues if q.pool == "gpu"]
    assert gpu[:3] == [("vision-high", 0, 1), ("vision", 2, 2), ("vision-low", 0, 3)]
    assert ("default", 1, 8) in gpu and len(gpu) == 9
    assert desired.controller_owns_limits
    # The controller moved the limits: provisioning again changes nothing; a priority
    # moved by hand is put back without touching the limit.
    moved = DesiredState(desired.pools, tuple(
        QueueState(q.pool, q.name, 7, q.priority + (q.name == "nlp-low")) for q in desired.queues),
        desired.limits)
    lines = [str(change) for change in plan_changes(desired, moved)]
    assert lines == ["update queue gpu/nlp-low priority 7 -> 6",
                     "update queue cpu/nlp-low priority 7 -> 6"]
