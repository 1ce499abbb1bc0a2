"""Authorisation on the real stack: every cell of the README's role x action table, each
as the REST call a person, CI or a service makes through the gateway (`make up`): 2xx when
allowed, 403 naming the rule when not, 401 without (or with wrong) credentials. Then what
the table cannot show: another team's runs and deployments, another team's queue,
priorities, a run's team parameter, the teams file, the event and log streams.

Teams alpha (viewer viv, runner rui, approver ada) and beta (bo: runner and approver);
the platform's ops (admin), fairshare-controller and ci (deployer). Runs are scheduled a
day ahead, so the workers leave them alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

from mlops.governance.identities import hash_secret
from mlops.governance.policy import Action
from tests.e2e.sleepy_flow import team_job
from tests.e2e.stack import (
    PLATFORM_ACCOUNTS,
    PrefectApi,
    credentials,
    deploy_from_checkout,
    flow_schema,
    run_module,
    running_stack,
)
from tests.unit.test_gateway_audit import store_down

pytestmark = pytest.mark.slow
JOB = "tests/e2e/sleepy_flow.py:team_job"
TEAMS_YAML = PLATFORM_ACCOUNTS + """\
fairshare: {period_s: 3600, preemption: false}
pools:
  gpu: {capacity: 3, type: process}
  cpu: {capacity: 2, type: process}
teams:
  - name: alpha
    weight: 1
    priority: 1
    quotas: {gpu: 1, cpu: 1}
    members:
      - {name: viv, roles: [viewer], credential: "env:MLOPS_SECRET_VIV"}
      - {name: rui, roles: [runner], credential: "env:MLOPS_SECRET_RUI"}
      - {name: ada, roles: [approver], credential: "env:MLOPS_SECRET_ADA"}
  - name: beta
    weight: 1
    priority: 2
    quotas: {gpu: 1, cpu: 0}
    members:
      - {name: bo, roles: [runner, approver], credential: "env:MLOPS_SECRET_BO"}
  - name: default
    weight: 1
    priority: 3
    quotas: {gpu: 1, cpu: 1}
"""
ROLES = {"viewer": "viv", "runner": "rui", "approver": "ada", "admin": "ops",
         "controller": "fairshare-controller", "deployer": "ci"}
RUNNER = {Action.RUN_TRIGGER, Action.RUN_CANCEL, Action.RUN_PAUSE, Action.RUN_RESUME,
          Action.RUN_RETRY, Action.RUN_SET_STATE, Action.DEPLOYMENT_PAUSE,
          Action.DEPLOYMENT_RESUME}
# The README's table: what each role may do (team roles: in their own team, alpha here).
ALLOWED = {
    "viewer": {Action.READ},
    "runner": {Action.READ, *RUNNER},
    "approver": {Action.READ, *RUNNER, Action.RUN_TRIGGER_HIGH, Action.RUN_APPROVE},
    "admin": set(Action),
    "controller": {Action.READ, Action.QUEUE_LIMIT, Action.RUN_REQUEUE, Action.RUN_CANCEL,
                   Action.RUN_REPORT, Action.FLOW_REGISTER},
    "deployer": {Action.READ, Action.DEPLOYMENT_WRITE, Action.FLOW_REGISTER},
}


@dataclass
class World:
    """The stack, a client per identity and alpha's and beta's deployments."""

    stack: dict
    clients: dict[str, PrefectApi] = field(default_factory=dict)
    deployments: dict[str, str] = field(default_factory=dict)
    flow_id: str = ""
    secret_block: str = ""
    count: int = 0

    @property
    def admin(self) -> PrefectApi:
        return self.clients["ops"]

    def key(self) -> str:
        self.count += 1
        return f"k{self.count}"

    def future_run(self, deployment: str = "alpha", **extra: Any) -> dict:
        """A run scheduled a day ahead, made by the admin."""
        response = self.admin.post(f"/deployments/{self.deployments[deployment]}/create_flow_run",
                                   {**later(), "idempotency_key": self.key(), **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def deployment(self, team: str) -> str:
        """A throwaway deployment of a team (to delete)."""
        return deploy_from_checkout(self.admin, "team-job", JOB, f"spare-{self.key()}", "gpu",
                                    team, {}, tags=[f"team:{team}"])


def later() -> dict:
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("gateway-authz")
    teams = root / "teams.yaml"
    teams.write_text(TEAMS_YAML)
    with running_stack(root, "--teams", str(teams)) as stack:
        found = World(stack)
        for name in (*ROLES.values(), "bo"):
            found.clients[name] = PrefectApi(stack["api"], credentials(stack, name))
        schema = flow_schema(team_job)
        for team in ("alpha", "beta"):
            found.deployments[team] = deploy_from_checkout(
                found.admin, "team-job", JOB, f"job-{team}", "gpu", team,
                {"params": {"seconds": 0.1, "team": team}}, tags=[f"team:{team}"],
                schema=schema)
        found.flow_id = found.admin.post("/flows/", {"name": "team-job"}).json()["id"]
        found.secret_block = _secret_block(stack)
        yield found


def _secret_block(stack: dict) -> str:
    """A Secret block, saved by the admin with Prefect's own client through the gateway."""
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack["api"],
                             PREFECT_API_AUTH_STRING: ":".join(stack["auth"])}):
        return str(Secret(value="the-git-token").save("authz-secret", overwrite=True))


Probe = Callable[[World, PrefectApi, str], httpx.Response]


def _set_state(world: World, client: PrefectApi, state: str) -> httpx.Response:
    run = world.future_run()
    return client.post(f"/flow_runs/{run['id']}/set_state",
                       {"state": {"type": state}, "force": True})


def _trigger(world: World, client: PrefectApi, queue: str | None = None) -> httpx.Response:
    body = {**later(), "idempotency_key": world.key()}
    return client.post(f"/deployments/{world.deployments['alpha']}/create_flow_run",
                       {**body, **({"work_queue_name": queue} if queue else {})})


def _requeue(world: World, client: PrefectApi) -> httpx.Response:
    original = world.future_run()
    return client.post(f"/deployments/{world.deployments['alpha']}/create_flow_run", {
        "parameters": original["parameters"], "work_queue_name": "alpha", **later(),
        "tags": ["preempted", f"requeued-from:{original['id']}"],
        "idempotency_key": f"preempted:{original['id']}"})


FORM = {"type": "object", "properties": {"approve": {"type": "boolean"},
                                          "comment": {"type": "string"},
                                          "approver": {"type": "string"}}}


def _awaiting_approval(world: World) -> str:
    """A run paused for approval as flows/approval.py pauses one: key ``approval-0`` and a
    form (its schema stored as the run's input), set up by the admin."""
    run = world.future_run()["id"]
    keyset = {"description": "paused-approval-0-description",
              "response": "paused-approval-0-response", "schema": "paused-approval-0-schema"}
    paused = world.admin.post(f"/flow_runs/{run}/set_state", {"force": True, "state": {
        "type": "PAUSED", "name": "Suspended", "state_details": {
            "pause_key": "approval-0", "run_input_keyset": keyset,
            "pause_timeout": later()["state"]["state_details"]["scheduled_time"]}}})
    assert paused.status_code in (200, 201), paused.text
    stored = world.admin.post(f"/flow_runs/{run}/input",
                              {"key": keyset["schema"], "value": json.dumps(FORM)})
    assert stored.status_code == 201, stored.text
    return run


def _paused(world: World, client: PrefectApi) -> httpx.Response:
    """Pause alpha's deployment, then resume it as the admin (for the probes after)."""
    deployment = world.deployments["alpha"]
    response = client.post(f"/deployments/{deployment}/pause_deployment", {})
    world.admin.post(f"/deployments/{deployment}/resume_deployment", {})
    return response


def _teams_file(world: World, client: PrefectApi) -> httpx.Response:
    return client.call("PUT", "/gateway/teams", content=world.stack["teams"].read_bytes())


PROBES: dict[Action, Probe] = {
    Action.READ: lambda w, c, _: c.post("/flow_runs/filter", {"limit": 1}),
    Action.READ_SECRETS: lambda w, c, _: c.call(
        "GET", f"/block_documents/{w.secret_block}?include_secrets=true"),
    Action.RUN_TRIGGER: lambda w, c, _: _trigger(w, c),
    Action.RUN_TRIGGER_HIGH: lambda w, c, _: _trigger(w, c, "alpha-high"),
    Action.RUN_CANCEL: lambda w, c, _: _set_state(w, c, "CANCELLING"),
    Action.RUN_PAUSE: lambda w, c, _: _set_state(w, c, "PAUSED"),
    Action.RUN_RESUME: lambda w, c, _: c.post(f"/flow_runs/{w.future_run()['id']}/resume", {}),
    Action.RUN_APPROVE: lambda w, c, _: c.post(f"/flow_runs/{_awaiting_approval(w)}/resume",
                                               {"run_input": {"approve": True}}),
    Action.RUN_RETRY: lambda w, c, _: _set_state(w, c, "SCHEDULED"),
    Action.RUN_SET_STATE: lambda w, c, _: _set_state(w, c, "FAILED"),
    Action.RUN_EXECUTE: lambda w, c, _: _set_state(w, c, "PENDING"),
    Action.RUN_DELETE: lambda w, c, _: c.call("DELETE", f"/flow_runs/{w.future_run()['id']}"),
    Action.RUN_REQUEUE: lambda w, c, _: _requeue(w, c),
    Action.RUN_REPORT: lambda w, c, role: c.post("/flow_runs/", {"flow_id": w.flow_id,
                                                                 "name": f"report-{w.key()}"}),
    Action.RUN_JOB_VARIABLES: lambda w, c, _: c.post(
        f"/deployments/{w.deployments['alpha']}/create_flow_run",
        {**later(), "idempotency_key": w.key(), "job_variables": {"env": {"X": "1"}}}),
    Action.DEPLOYMENT_PAUSE: lambda w, c, _: _paused(w, c),
    Action.DEPLOYMENT_RESUME: lambda w, c, _: c.post(
        f"/deployments/{w.deployments['alpha']}/resume_deployment", {}),
    Action.DEPLOYMENT_WRITE: lambda w, c, role: c.call(
        "PATCH", f"/deployments/{w.deployments['alpha']}", {"description": f"by {role}"}),
    Action.DEPLOYMENT_DELETE: lambda w, c, _: c.call("DELETE",
                                                     f"/deployments/{w.deployment('alpha')}"),
    Action.FLOW_REGISTER: lambda w, c, role: c.post("/flows/", {"name": f"flow-{role}"}),
    Action.QUEUE_LIMIT: lambda w, c, _: c.call("PATCH", "/work_pools/cpu/queues/alpha",
                                               {"concurrency_limit": 1}),
    Action.INFRA_WRITE: lambda w, c, _: c.call("PATCH", "/work_pools/cpu",
                                               {"concurrency_limit": 2}),
    Action.TEAMS_WRITE: lambda w, c, _: _teams_file(w, c),
    Action.PLATFORM_WRITE: lambda w, c, role: c.post("/variables/",
                                                     {"name": f"v_{role}_{w.key()}",
                                                      "value": 1}),
}
# What a probe needs besides its action (it is refused by the first rule it breaks).
NEEDS = {Action.RUN_JOB_VARIABLES: {Action.RUN_TRIGGER, Action.RUN_JOB_VARIABLES}}
# Pools, queues and limits beyond the table's one probe each: all admin-only.
INFRA = {
    "a queue": lambda c, role: c.post("/work_pools/cpu/queues", {"name": f"scratch-{role}"}),
    "a queue's priority": lambda c, _: c.call("PATCH", "/work_pools/cpu/queues/alpha",
                                              {"concurrency_limit": 1, "priority": 1}),
    "a global limit": lambda c, _: c.call("PATCH", "/v2/concurrency_limits/team:alpha:gpu",
                                          {"limit": 1}),
    "a tag limit": lambda c, role: c.post("/concurrency_limits/",
                                          {"tag": f"t-{role}", "concurrency_limit": 1}),
}


def test_every_action_has_a_probe() -> None:
    assert set(PROBES) == set(Action)


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("action", list(Action))
def test_each_role_and_action(world: World, role: str, action: Action) -> None:
    response = PROBES[action](world, world.clients[ROLES[role]], role)
    if action in ALLOWED[role]:
        assert response.status_code in (200, 201, 204), (role, action, response.text)
    else:
        assert response.status_code == 403, (role, action, response.text)
        rule = response.json()["rule"]
        assert rule in NEEDS.get(action, {action}) and rule not in ALLOWED[role], response.text


@pytest.mark.parametrize("action", list(Action))
def test_without_credentials_every_call_is_401(world: World, action: Action) -> None:
    anonymous = PrefectApi(world.stack["api"])
    response = PROBES[action](world, anonymous, "anonymous")
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="mlops"'
    wrong = PrefectApi(world.stack["api"], ("rui", "not-the-secret"))
    assert PROBES[action](world, wrong, "wrong").status_code == 401


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("what", list(INFRA))
def test_pools_queues_and_limits_are_admin_only(world: World, role: str, what: str) -> None:
    response = INFRA[what](world.clients[ROLES[role]], role)
    expected = (200, 201, 204) if role == "admin" else (403,)
    assert response.status_code in expected, (role, what, response.text)


ANOTHER_TEAMS = {  # bo, runner and approver of beta, on alpha's runs and deployments
    "trigger": lambda w, c: _trigger(w, c),
    "cancel": lambda w, c: _set_state(w, c, "CANCELLING"),
    "pause": lambda w, c: _set_state(w, c, "PAUSED"),
    "resume": lambda w, c: c.post(f"/flow_runs/{w.future_run()['id']}/resume", {}),
    "delete a run": lambda w, c: c.call("DELETE", f"/flow_runs/{w.future_run()['id']}"),
    "pause a deployment": lambda w, c: c.post(
        f"/deployments/{w.deployments['alpha']}/pause_deployment", {}),
    "resume a deployment": lambda w, c: c.post(
        f"/deployments/{w.deployments['alpha']}/resume_deployment", {}),
    "delete a deployment": lambda w, c: c.call("DELETE", f"/deployments/{w.deployment('alpha')}"),
}


@pytest.mark.parametrize("what", list(ANOTHER_TEAMS))
def test_another_teams_runs_and_deployments_are_refused(world: World, what: str) -> None:
    response = ANOTHER_TEAMS[what](world, world.clients["bo"])
    assert response.status_code == 403, response.text
    assert "may not" in response.json()["detail"] and "in team alpha" in response.text


def test_a_run_on_another_teams_queue_is_refused(world: World) -> None:
    rui, ada = world.clients["rui"], world.clients["ada"]
    for queue in ("beta", "beta-high", "default", "nowhere"):
        response = _trigger(world, ada, queue)
        assert response.status_code == 403, response.text
        assert f"queue '{queue}' is" in response.json()["detail"]
    assert _trigger(world, rui, "alpha-low").status_code == 201
    own = rui.post(f"/deployments/{world.deployments['beta']}/create_flow_run", later())
    assert own.status_code == 403 and "in team beta" in own.text


def test_a_priority_above_the_role_is_refused(world: World) -> None:
    deployment = world.deployments["alpha"]
    high = {**later(), "parameters": {"params": {"seconds": 0.1, "priority": "high"}}}
    refused = world.clients["rui"].post(f"/deployments/{deployment}/create_flow_run", high)
    assert refused.status_code == 403 and refused.json()["rule"] == "run.trigger-high"
    allowed = world.clients["ada"].post(f"/deployments/{deployment}/create_flow_run", high)
    assert allowed.status_code == 201, allowed.text
    # The team was filled in from the deployment: the caller did not name it.
    assert allowed.json()["parameters"]["params"]["team"] == "alpha"


def test_a_team_parameter_that_differs_is_refused_and_no_run_is_made(world: World) -> None:
    deployment = world.deployments["alpha"]
    query = {"flow_runs": {"deployment_id": {"any_": [deployment]}}}
    before = world.admin.post("/flow_runs/count", query).json()
    for who in ("rui", "ops"):
        body = {**later(), "parameters": {"params": {"seconds": 0.1, "team": "beta"}}}
        refused = world.clients[who].post(f"/deployments/{deployment}/create_flow_run", body)
        assert refused.status_code == 403, refused.text
        assert "params.team 'beta' differs from the deployment's team 'alpha'" in refused.text
    tagged = world.clients["rui"].post(f"/deployments/{deployment}/create_flow_run",
                                       {**later(), "tags": ["team:beta"]})
    assert tagged.status_code == 403
    assert world.admin.post("/flow_runs/count", query).json() == before


def test_the_teams_file_is_read_and_replaced_by_admins_only(world: World) -> None:
    text = world.admin.call("GET", "/gateway/teams")
    assert text.status_code == 200 and "name: alpha" in text.text
    assert world.clients["ada"].call("GET", "/gateway/teams").status_code == 403
    invalid = world.admin.call("PUT", "/gateway/teams", content=b"teams: [{name: Bad}]\n")
    assert invalid.status_code == 422 and invalid.json()["problems"], invalid.text
    # A member added by an admin can sign in at the next request, without a restart.
    teams = world.stack["teams"]
    grown = teams.read_text().replace(
        "      - {name: bo,", f"      - {{name: bea, roles: [viewer], credential: "
        f"\"{hash_secret('bea-password')}\"}}\n      - {{name: bo,")
    assert world.admin.call("PUT", "/gateway/teams", content=grown.encode()).status_code == 200
    bea = PrefectApi(world.stack["api"], ("bea", "bea-password"))
    assert bea.post("/flow_runs/filter", {"limit": 1}).status_code == 200
    assert _trigger(world, bea).status_code == 403


def test_event_and_log_streams_are_read_by_anyone_written_by_the_platform(
        world: World) -> None:
    socket = world.stack["api"].replace("http", "ws", 1)

    async def handshake(path: str, token: str | None, header: str | None = None) -> str:
        headers = {"Authorization": header} if header else {}
        try:
            async with websockets.connect(f"{socket}{path}", subprotocols=["prefect"],
                                          additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                return json.loads(await ws.recv())["type"]
        except websockets.exceptions.InvalidStatus as exc:
            return f"http {exc.response.status_code}"
        except websockets.exceptions.ConnectionClosed as exc:
            return f"closed {exc.rcvd.code if exc.rcvd else None}"

    viewer = ":".join(credentials(world.stack, "viv"))
    controller = ":".join(credentials(world.stack, "fairshare-controller"))
    assert asyncio.run(handshake("/events/out", viewer)) == "auth_success"
    assert asyncio.run(handshake("/logs/out", viewer)) == "auth_success"
    assert asyncio.run(handshake("/events/in", controller)) == "auth_success"
    assert asyncio.run(handshake("/events/in", viewer)) == "closed 1008"
    assert asyncio.run(handshake("/events/out", "viv:wrong")) == "closed 1008"
    basic = "Basic " + base64.b64encode(b"viv:wrong").decode()
    assert asyncio.run(handshake("/events/out", None, basic)) == "http 401"
    upstream = world.stack["secrets"]["MLOPS_PREFECT_SERVER_AUTH"]
    assert asyncio.run(handshake("/events/out", upstream)) == "closed 1008"  # not an identity


def test_only_an_approver_answers_an_approval_and_is_named_in_the_answer(world: World) -> None:
    run = _awaiting_approval(world)
    answer = {"run_input": {"approve": True, "comment": "fine", "approver": "vera"}}
    refused = world.clients["rui"].post(f"/flow_runs/{run}/resume", answer)
    assert refused.status_code == 403 and refused.json()["rule"] == "run.approve"
    forged = world.clients["rui"].post(f"/flow_runs/{run}/input", {
        "key": "paused-approval-0-response", "value": json.dumps(answer["run_input"])})
    assert forged.status_code == 403 and forged.json()["rule"] == "run.execute"
    assert world.clients["bo"].post(f"/flow_runs/{run}/resume", answer).status_code == 403
    given = world.clients["ada"].post(f"/flow_runs/{run}/resume", answer)
    assert given.status_code in (200, 201) and given.json()["status"] == "ACCEPT", given.text
    stored = world.admin.get(f"/flow_runs/{run}/input/paused-approval-0-response")
    assert stored == {"approve": True, "comment": "fine", "approver": "ada"}


def test_refusals_and_triggers_are_in_the_audit_trail_which_fails_closed(
        world: World) -> None:
    """As an auditor reads it (`mlops audit show`): a 401 and a 403 with who and why, an
    allowed trigger with its parameters' hash; with the trail unable to record, a trigger
    is answered 503 and no run is made; the chain verifies."""
    deployment = world.deployments["alpha"]
    since = datetime.now(UTC).isoformat()
    assert PrefectApi(world.stack["api"], ("rui", "wrong")).post(
        "/flow_runs/filter", {"limit": 1}).status_code == 401
    assert _trigger(world, world.clients["bo"]).status_code == 403
    created = _trigger(world, world.clients["rui"])
    assert created.status_code == 201, created.text

    def show(*args: str) -> list[dict]:
        done = run_module("flows.cli", "audit", "show", "--since", since, "--json", *args,
                          env=world.stack["env"])
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    digest = hashlib.sha256(json.dumps(created.json()["parameters"], sort_keys=True,
                                       separators=(",", ":")).encode()).hexdigest()
    assert [(r["actor"], r["team"], r["details"]["deployment_id"],
             r["details"]["parameters_sha256"]) for r in show("--action", "run.triggered")
            ] == [("rui", "alpha", deployment, digest)]
    wanted, deadline = {("anonymous", None, 401), ("bo", "alpha", 403)}, time.monotonic() + 10
    while True:  # refusals are written by the gateway's writer thread, just after the answer
        refused = {(r["actor"], r["team"], r["details"]["status"])
                   for r in show("--action", "request.refused")}
        if wanted <= refused or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= refused, refused

    query = {"flow_runs": {"deployment_id": {"any_": [deployment]}}}
    before = world.admin.post("/flow_runs/count", query).json()
    with store_down(world.stack["root"] / "data"):  # no retries: a 503 here is final
        refused_run = httpx.post(f"{world.stack['api']}/deployments/{deployment}/create_flow_run",
                                 json={**later(), "idempotency_key": world.key()},
                                 auth=credentials(world.stack, "rui"), timeout=30)
    assert refused_run.status_code == 503, refused_run.text
    assert "so the run was not started" in refused_run.json()["detail"]
    assert world.admin.post("/flow_runs/count", query).json() == before
    verified = run_module("flows.cli", "audit", "verify", env=world.stack["env"])
    assert verified.returncode == 0 and "audit trail intact" in verified.stdout, verified.stdout
