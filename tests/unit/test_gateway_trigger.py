"""The checks on a new run before the policy decides: team from the deployment, queues of
that team, priority, job variables, states, requeued copies."""

from __future__ import annotations

import pytest

from infra.gateway.ownership import DeploymentInfo, RunInfo, params_fields
from infra.gateway.trigger import check_trigger, requeued_from
from mlops.governance.policy import Action

OWNERS = {"alpha": ("alpha", "normal"), "alpha-high": ("alpha", "high"),
          "alpha-low": ("alpha", "low"), "beta": ("beta", "normal"),
          "default": ("default", "normal")}
PIPELINE = DeploymentInfo(id="d1", team="alpha", work_queue_name="alpha",
                          parameters={"params": {"spec": {"name": "x"}, "team": "alpha"}},
                          params_fields=frozenset({"spec", "team", "priority", "model"}))
SLEEPY = DeploymentInfo(id="d2", team="alpha", work_queue_name="alpha",
                        parameters={"seconds": 1})


def test_the_team_is_filled_in_from_the_deployment() -> None:
    body = {"parameters": {"params": {"spec": {"name": "y"}}}}
    check = check_trigger(body, PIPELINE, OWNERS)
    assert check.refusal is None and check.team == "alpha"
    assert check.actions == (Action.RUN_TRIGGER,)
    assert check.body["parameters"]["params"] == {"spec": {"name": "y"}, "team": "alpha"}
    assert body == {"parameters": {"params": {"spec": {"name": "y"}}}}  # not mutated


def test_the_deployments_defaults_count_when_the_body_has_no_params() -> None:
    check = check_trigger({}, PIPELINE, OWNERS)
    assert check.refusal is None and check.body == {}
    wrong = DeploymentInfo(**{**PIPELINE.__dict__, "parameters": {"params": {"team": "beta"}}})
    assert "differs from the deployment's team" in check_trigger({}, wrong, OWNERS).refusal


def test_a_team_parameter_that_differs_is_refused_whoever_asks() -> None:
    check = check_trigger({"parameters": {"params": {"team": "beta"}}}, PIPELINE, OWNERS)
    assert check.refusal == ("params.team 'beta' differs from the deployment's team 'alpha': "
                             "a run's team comes from its deployment, never from a parameter")
    wrapped = {"parameters": {"params": {"__prefect_kind": "json",
                                         "value": '{"team": "beta"}'}}}
    assert "differs" in check_trigger(wrapped, PIPELINE, OWNERS).refusal
    template = {"parameters": {"params": {"team": {"__prefect_kind": "jinja",
                                                   "template": "{{ x }}"}}}}
    assert "not a jinja template" in check_trigger(template, PIPELINE, OWNERS).refusal


@pytest.mark.parametrize(("queue", "refused"), [
    ("alpha", False), ("alpha-high", False), ("alpha-low", False), ("beta", True),
    ("default", True), ("elsewhere", True)])
def test_only_the_deployments_teams_queues(queue: str, refused: bool) -> None:
    check = check_trigger({"work_queue_name": queue}, SLEEPY, OWNERS)
    assert (check.refusal is not None) == refused, check.refusal
    if refused:
        assert f"queue {queue!r} is" in check.refusal


def test_a_team_tag_of_another_team_is_refused() -> None:
    assert check_trigger({"tags": ["team:alpha", "x"]}, SLEEPY, OWNERS).refusal is None
    assert "another team" in check_trigger({"tags": ["team:beta"]}, SLEEPY, OWNERS).refusal


def test_high_priority_by_queue_or_parameter() -> None:
    assert check_trigger({"work_queue_name": "alpha-high"}, SLEEPY, OWNERS).actions == (
        Action.RUN_TRIGGER_HIGH,)
    body = {"parameters": {"params": {"priority": "high"}}}
    assert check_trigger(body, PIPELINE, OWNERS).actions == (Action.RUN_TRIGGER_HIGH,)
    low = {"work_queue_name": "alpha-low", "parameters": {"params": {"priority": "low"}}}
    assert check_trigger(low, PIPELINE, OWNERS).actions == (Action.RUN_TRIGGER,)


def test_job_variables_and_states_past_the_queue_need_more() -> None:
    check = check_trigger({"job_variables": {"command": "sh"},
                           "state": {"type": "RUNNING"}}, SLEEPY, OWNERS)
    assert check.actions == (Action.RUN_TRIGGER, Action.RUN_JOB_VARIABLES, Action.RUN_EXECUTE)
    scheduled = check_trigger({"state": {"type": "SCHEDULED"}, "job_variables": {}}, SLEEPY,
                              OWNERS)
    assert scheduled.actions == (Action.RUN_TRIGGER,)


def test_a_requeued_copy_must_copy_its_original() -> None:
    original = RunInfo(id="r1", deployment_id="d2", work_queue_name="alpha",
                       parameters={"seconds": 1}, tags=())
    body = {"parameters": {"seconds": 1}, "work_queue_name": "alpha",
            "tags": ["preempted", "requeued-from:r1"]}
    assert requeued_from(body) == "r1"
    check = check_trigger(body, SLEEPY, OWNERS, original)
    assert check.actions == (Action.RUN_REQUEUE,) and check.refusal is None
    forged = check_trigger({**body, "parameters": {"seconds": 99}}, SLEEPY, OWNERS, original)
    assert "must keep run r1's deployment, queue and parameters" in forged.refusal


def test_a_deployment_of_no_team_is_the_platforms() -> None:
    orphan = DeploymentInfo(id="d3", team=None, work_queue_name="elsewhere")
    check = check_trigger({"parameters": {"params": {"team": "beta"}}}, orphan, OWNERS)
    assert check.team == "*" and check.refusal is None


def test_params_fields_follow_refs() -> None:
    schema = {"properties": {"params": {"$ref": "#/definitions/P"}},
              "definitions": {"P": {"properties": {"team": {}, "spec": {}}}}}
    assert params_fields(schema) == {"team", "spec"}
    wrapped = {"properties": {"params": {"allOf": [{"$ref": "#/$defs/P"}]}},
               "$defs": {"P": {"properties": {"team": {}}}}}
    assert params_fields(wrapped) == {"team"}
    assert params_fields({"properties": {"seconds": {}}}) == frozenset()
