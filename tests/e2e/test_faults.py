"""Processes that die on a real `make up` stack: supervised workers and controller, and a
training run whose worker and process die together (a lost node), which Prefect's zombie
detection, installed by `make up`, marks Crashed so that its slot returns, and whose copy
the controller requeues to resume from its checkpoint.

One team, one GPU slot (capacity = quota, so the fair-share controller can never lend it),
a controller that decides once at start (its period is long), so each limit a test reads
was set by what the test did.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.chaos_stack import descendants
from benchmarks.synthetic import generate_panel, synthetic_spec
from infra.automations import (
    UNSTARTED_AUTOMATION,
    UNSTARTED_REASON,
    ZOMBIE_AFTER_S,
    ZOMBIE_AUTOMATION,
)
from infra.crash_requeue import CRASH_RETRY_TAG
from infra.prefect_api import REQUEUED_TAG
from infra.worker_settings import HEARTBEAT_S
from mlops.processes import supervisor_state_path
from mlops.supervisor import SupervisedState, read_state
from tests.conftest import wait_for
from tests.e2e.stack import (
    PLATFORM_ACCOUNTS,
    deploy_from_checkout,
    run_module,
    running_stack,
    team_data,
    wait_final,
)

pytestmark = pytest.mark.slow
TEAMS_YAML = """\
fairshare: {period_s: 3600, preemption: false}
pools:
  gpu: {capacity: 1, type: process}
  cpu: {capacity: 1, type: process}
teams:
  - name: default
    weight: 1
    priority: 1
    quotas: {gpu: 1, cpu: 1}
    members:
      - {name: local, roles: [runner, approver], credential: "env:MLOPS_SECRET_LOCAL"}
"""
START_TIMEOUT_S = 45  # short here (the default is 300 s), yet above a busy run's start
EPOCHS = 1_500  # tens of seconds of training: the kill comes after its first checkpoint
# Detected within: the automation's window after the last heartbeat, plus the server's
# proactive-trigger evaluation and a busy machine's slack.
CRASH_BOUND_S = ZOMBIE_AFTER_S + HEARTBEAT_S + 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("faults")
    teams = root / "teams.yaml"
    teams.write_text(PLATFORM_ACCOUNTS + TEAMS_YAML)
    with running_stack(root, "--teams", str(teams), PREFECT_WORKER_QUERY_SECONDS="1",
                       MLOPS_START_TIMEOUT_S=str(START_TIMEOUT_S)) as stack:
        yield stack


def supervised(stack: dict, service: str) -> SupervisedState:
    platform = Path(stack["env"]["MLOPS_DATA_DIR"]) / "platform"
    return read_state(supervisor_state_path(platform / f"{service}.pid")) or SupervisedState("")


def queue_limit(stack: dict, queue: str) -> int | None:
    return stack["client"].get(f"/work_pools/gpu/queues/{queue}")["concurrency_limit"]


def test_make_up_installs_the_zombie_automation(stack: dict) -> None:
    found = stack["client"].post("/automations/filter", {}).json()
    zombie = next(a for a in found if a["name"] == ZOMBIE_AUTOMATION)
    trigger = zombie["trigger"]
    assert trigger["posture"] == "Proactive" and trigger["within"] == ZOMBIE_AFTER_S
    assert trigger["after"] == ["prefect.flow-run.heartbeat"]
    assert zombie["actions"][0]["state"] == "CRASHED"
    unstarted = next(a for a in found if a["name"] == UNSTARTED_AUTOMATION)
    assert unstarted["trigger"]["within"] == START_TIMEOUT_S  # MLOPS_START_TIMEOUT_S
    again = run_module("infra.provision", "--file", str(stack["teams"]),
                       env={**stack["env"], "PREFECT_API_URL": stack["api"],
                            "PREFECT_API_AUTH_STRING": ":".join(stack["auth"])})
    assert again.returncode == 0 and "automation" not in again.stdout, again.stdout


def test_a_killed_worker_is_restarted_and_make_status_says_so(stack: dict) -> None:
    before = supervised(stack, "worker-cpu")
    os.kill(before.pid, signal.SIGKILL)
    after = wait_for(lambda: (s := supervised(stack, "worker-cpu")).restarts == 1 and s.pid
                     and s, 60, "worker-cpu restarted")
    assert after.pid != before.pid and after.last_exit == -signal.SIGKILL
    status = run_module("infra.services", "status", env=stack["env"])
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("worker-cpu"))
    assert f"running (pid {after.pid})" in line and "restarted 1x" in line, status.stdout


def test_a_killed_controller_puts_limits_back_to_guarantees_and_returns(stack: dict) -> None:
    client = stack["client"]
    lent = client.call("PATCH", "/work_pools/gpu/queues/default", {"concurrency_limit": 2})
    assert lent.status_code == 204, lent.text  # as if the controller had lent a slot
    before = supervised(stack, "fairshare-controller")
    os.kill(before.pid, signal.SIGKILL)
    wait_for(lambda: queue_limit(stack, "default") == 1, 60, "limit back to the quota")
    after = wait_for(lambda: (s := supervised(stack, "fairshare-controller")).pid
                     and s.restarts == 1 and s, 60, "controller restarted")
    assert after.pid != before.pid
    log = (Path(stack["env"]["MLOPS_DATA_DIR"]) / "platform" / "fairshare-controller.log")
    assert "limit gpu/default 2 -> 1" in log.read_text()


def test_a_run_whose_node_dies_mid_training_is_crashed_requeued_and_resumed(
        stack: dict) -> None:
    """A lost node, end to end: the run is marked Crashed within the bound, its slot comes
    back, the controller's next tick requeues it, and the copy resumes the training from
    the checkpoint the dead run wrote."""
    client = stack["client"]
    data = team_data(stack) / "zombie.parquet"
    generate_panel(n_entities=60, n_periods=8, seed=3).to_parquet(data, index=False)
    spec = synthetic_spec(str(data), name="zombie").model_dump(mode="json")
    training = deploy_from_checkout(
        client, "training-pipeline", "flows/training_pipeline.py:training_pipeline", "faults",
        "gpu", "default", {"params": {"spec": spec, "deploy": False, "model": {
            "epochs": EPOCHS, "patience": EPOCHS, "hidden": [64, 64]}}}, tags=["team:default"])
    run = client.post(f"/deployments/{training}/create_flow_run", {}).json()
    checkpoints = Path(stack["env"]["MLOPS_DATA_DIR"]) / "training" / "zombie" / "checkpoints"
    wait_for(lambda: list(checkpoints.glob("*/last.pt")), 300, "training started")
    worker = supervised(stack, "worker-gpu").pid
    doomed = [worker, *descendants(worker)]
    assert len(doomed) >= 2  # the worker and the run's process
    for pid in doomed:  # the node is gone: nobody reports the run's end
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    ended = wait_final(client, run["id"], CRASH_BOUND_S)
    detected = time.monotonic() - killed
    assert ended["state"]["type"] == "CRASHED", (ended["state"], detected)
    assert "no heartbeat" in ended["state"]["message"]
    assert ended["end_time"] is not None  # the GPU meter stops charging it
    print(f"zombie run crashed {detected:.0f} s after the kill (bound {CRASH_BOUND_S} s)")

    # The controller's next tick (its period is long here, so the test runs one) requeues
    # it; the copy starts on the team's one-slot queue, so the slot is free, on the worker
    # the supervisor restarted, and resumes from the dead run's checkpoint.
    tick = run_module("flows.fairshare_controller", "--file", str(stack["teams"]),
                      "--ticks", "1", env={**stack["env"], "PREFECT_API_URL": stack["api"],
                                           "PREFECT_API_AUTH_STRING": ":".join(stack["auth"])})
    assert tick.returncode == 0, tick.stdout + tick.stderr
    [copy] = client.post("/flow_runs/filter", {"flow_runs": {"tags": {
        "all_": [f"{REQUEUED_TAG}{run['id']}"]}}}).json()
    assert CRASH_RETRY_TAG in copy["tags"] and copy["deployment_id"] == training
    assert wait_final(client, copy["id"], 400)["state"]["type"] == "COMPLETED"
    assert supervised(stack, "worker-gpu").restarts == 1
    tracking = f"sqlite:///{stack['env']['MLOPS_DATA_DIR']}/mlflow.db"
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    [version] = mlflow.search_model_versions("name='default.zombie'")
    params = mlflow.get_run(version.run_id).data.params
    assert 0 < int(params["resumed_from_epoch"]) < EPOCHS, params


def test_a_run_whose_worker_died_while_it_was_pending_is_crashed(stack: dict) -> None:
    """A run left Pending (its worker took it, then died with it before it started) sends
    no heartbeat; the platform marks it Crashed after the start timeout, for the
    controller to requeue. The test plays the worker: it moves a far-off run to Pending."""
    client = stack["client"]
    sleepy = deploy_from_checkout(client, "sleepy", "tests/e2e/sleepy_flow.py:sleepy",
                                  "unstarted", "gpu", "default", {"seconds": 1.0},
                                  tags=["team:default"])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    run = client.post(f"/deployments/{sleepy}/create_flow_run", {"state": {
        "type": "SCHEDULED", "state_details": {"scheduled_time": later}}}).json()
    pending = client.call("POST", f"/flow_runs/{run['id']}/set_state",
                          {"state": {"type": "PENDING"}, "force": True})
    assert pending.status_code in (200, 201) and pending.json()["status"] == "ACCEPT", \
        pending.text
    ended = wait_final(client, run["id"], START_TIMEOUT_S + 60)
    assert ended["state"]["type"] == "CRASHED", ended["state"]
    assert ended["state"]["message"].endswith(UNSTARTED_REASON)
