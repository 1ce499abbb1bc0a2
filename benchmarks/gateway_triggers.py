"""The gateway's cost on a trigger (a row of `make bench-governance`): a run started through
the gateway (a runner's credentials, every check of ``infra.gateway``) against the same run
started directly on the Prefect server (its auth string), alternating, on one server.

Set-up (not timed): a Prefect server that requires its auth string, the gateway in front
of it with a teams file of an admin and team alpha's runner, pools and queues provisioned
by ``infra.provision`` through the gateway, and one deployment of team alpha. Each trigger
is ``POST /api/deployments/{id}/create_flow_run`` with the team's parameters, scheduled a
day ahead (no worker runs it), over a kept-alive connection; warm-up triggers first. A
503 (the server's SQLite busy) is retried by the benchmark on both paths alike (the
gateway's own retries are off) and counted; the attempt that got through is timed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from benchmarks.servers import free_port
from infra.gateway.proxy import basic_auth
from mlops.processes import ServerNotReady, start_background, stop_background, wait_until_ready

BIN = Path(sys.executable).parent
TEAMS = """\
platform:
  admins: [{name: ops, credential: "env:MLOPS_SECRET_OPS"}]
pools:
  gpu: {capacity: 2, type: process}
  cpu: {capacity: 1, type: process}
teams:
  - name: alpha
    weight: 1
    priority: 1
    quotas: {gpu: 1, cpu: 0}
    members: [{name: rui, roles: [runner], credential: "env:MLOPS_SECRET_RUI"}]
  - {name: default, weight: 1, priority: 2, quotas: {gpu: 1, cpu: 1}}
"""


@contextmanager
def background(name: str, command: list[str], ready: str, env: dict[str, str],
               folder: Path) -> Iterator[None]:
    """A server of the stack, until the block ends."""
    log, pid = folder / f"{name}.log", folder / f"{name}.pid"
    process = start_background(command, log, pid, env)
    try:
        try:
            wait_until_ready(ready, process, log, 180.0)
        except ServerNotReady as exc:
            raise SystemExit(f"{name}: {exc}") from None
        yield
    finally:
        stop_background(pid)


@contextmanager
def stack(folder: Path) -> Iterator[dict[str, str]]:
    """The Prefect server and the gateway; yields their APIs and credentials."""
    server_port, gateway_port = free_port(), free_port()
    values = {"MLOPS_PREFECT_SERVER_AUTH": secrets.token_urlsafe(32),
              "MLOPS_GATEWAY_SESSION_KEY": secrets.token_urlsafe(32),
              "MLOPS_SECRET_OPS": secrets.token_urlsafe(24),
              "MLOPS_SECRET_RUI": secrets.token_urlsafe(24)}
    teams = folder / "teams.yaml"
    teams.write_text(TEAMS)
    base = {**os.environ, "PREFECT_HOME": str(folder / "prefect"), "MLOPS_PROFILE": "local",
            "MLOPS_DATA_DIR": str(folder / "data"),  # the audit trail of gateway and provision
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    server_env = {**base, "PREFECT_SERVER_API_AUTH_STRING": values["MLOPS_PREFECT_SERVER_AUTH"]}
    gateway_env = {**base, **values, "MLOPS_PREFECT_PORT": str(gateway_port),
                   "MLOPS_PREFECT_INTERNAL_PORT": str(server_port)}
    server = f"http://127.0.0.1:{server_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    with ExitStack() as started:
        started.enter_context(background(
            "prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(server_port)], f"{server}/api/health",
            server_env, folder))
        started.enter_context(background(
            "prefect-gateway", [sys.executable, "-m", "infra.gateway", "--teams", str(teams),
                                "--upstream-retries", "0"],
            f"{gateway}/gateway/health", gateway_env, folder))
        admin = f"ops:{values['MLOPS_SECRET_OPS']}"
        provision(teams, f"{gateway}/api", admin, base)
        yield {"server": f"{server}/api", "gateway": f"{gateway}/api", "admin": admin,
               "server_auth": values["MLOPS_PREFECT_SERVER_AUTH"],
               "runner": f"rui:{values['MLOPS_SECRET_RUI']}"}


def provision(teams: Path, api: str, admin: str, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "infra.provision", "--file", str(teams)],
                          env={**env, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": admin},
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"provisioning failed: {done.stderr[-2000:]}")


def deploy(api: str, admin: str) -> str:
    """A deployment of team alpha (a flow of this checkout; no worker runs it here)."""
    name, secret = admin.split(":", 1)
    with httpx.Client(base_url=api, auth=(name, secret), timeout=30) as client:
        flow = client.post("/flows/", json={"name": "bench-gateway"}).json()["id"]
        created = client.post("/deployments/", json={
            "name": "alpha", "flow_id": flow, "work_pool_name": "gpu",
            "work_queue_name": "alpha", "entrypoint": "tests/e2e/sleepy_flow.py:sleepy",
            "tags": ["team:alpha"], "parameters": {"seconds": 0.1}})
        created.raise_for_status()
        return created.json()["id"]


def trigger(client: httpx.Client, deployment: str, busy: list[int]) -> float:
    """Seconds one trigger took, as the caller sees it. A 503 (the server's SQLite busy,
    which Prefect's client retries) is counted in ``busy`` and retried; the attempt that
    got through is timed."""
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"parameters": {"seconds": 0.1},
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}}
    for attempt in range(10):
        began = time.perf_counter()
        response = client.post(f"/deployments/{deployment}/create_flow_run", json=body)
        took = time.perf_counter() - began
        if response.status_code != 503:
            break
        busy[0] += 1
        time.sleep(0.2 * 2 ** attempt)
    if response.status_code != 201:
        raise SystemExit(f"trigger failed: {response.status_code} {response.text[:500]}")
    return took


def measure(urls: dict[str, str], deployment: str, triggers: int,
            warm_up: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Alternating triggers (which path goes first alternates too), after a warm-up."""
    runner = urls["runner"].split(":", 1)
    clients = {"gateway": httpx.Client(base_url=urls["gateway"], timeout=30,
                                       auth=(runner[0], runner[1])),
               "direct": httpx.Client(base_url=urls["server"], timeout=30, headers={
                   "Authorization": basic_auth(urls["server_auth"])})}
    busy = {name: [0] for name in clients}
    for _ in range(warm_up):
        for name, client in clients.items():
            trigger(client, deployment, busy[name])
    busy = {name: [0] for name in clients}
    times: dict[str, list[float]] = {name: [] for name in clients}
    for index in range(triggers):
        for name in sorted(clients, reverse=index % 2 == 1):
            times[name].append(trigger(clients[name], deployment, busy[name]))
    for client in clients.values():
        client.close()
    return times, {name: count[0] for name, count in busy.items()}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
