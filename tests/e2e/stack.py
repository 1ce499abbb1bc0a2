"""The platform stack for end-to-end tests: `make up` on free ports under a temporary data
directory, the platform's commands run as a user runs them, and `make down` at the end.

The Prefect API is reached as users reach it, through the gateway, as the teams file's
first admin (``stack["client"]``); ``stack["secrets"]`` has every credential `up` used."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.chaos_services import production_secrets
from infra.credentials import (
    PRIVATE,
    SERVER_AUTH,
    SESSION_KEY,
    account,
    mlflow_variables,
    read_secrets,
)
from mlops.governance.identities import Role, load_governance
from mlops.governance.locations import TEAM_FOLDER
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEAMS = ROOT / "infra" / "teams.yaml"
# The platform's accounts, for a test's own teams file (prepended to its teams).
PLATFORM_ACCOUNTS = """\
platform:
  admins:
    - {name: ops, credential: "env:MLOPS_SECRET_OPS"}
  service_accounts:
    - name: fairshare-controller
      role: controller
      credential: "env:MLOPS_SECRET_FAIRSHARE_CONTROLLER"
    - {name: ci, role: deployer, credential: "env:MLOPS_SECRET_CI"}
"""


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


@contextmanager
def running_stack(root: Path, *up_args: str, **extra_env: str) -> Iterator[dict]:
    """Yields the stack's environment, API URL, folder, what `up` printed, its secrets and
    an admin's client. On the production profile the test plays the secret store."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(root / "data"),
           "MLOPS_PREFECT_PORT": str(free_port()), "MLOPS_MLFLOW_PORT": str(free_port()),
           "MLOPS_PREFECT_INTERNAL_PORT": str(free_port()),
           "MLOPS_FAIRSHARE_PORT": str(free_port()),
           "MLOPS_PROMETHEUS_PORT": str(free_port()), "MLOPS_NODE_EXPORTER_PORT": str(free_port()),
           "MLOPS_SCRAPE_INTERVAL_S": "2",
           **extra_env}
    for name in [*PRIVATE, "PREFECT_API_URL"]:
        env.pop(name, None)
    teams = Path(up_args[up_args.index("--teams") + 1]) if "--teams" in up_args else DEFAULT_TEAMS
    governance = load_governance(teams)
    if env.get("MLOPS_PROFILE") == "production":
        env |= production_secrets(teams)
    api = f"http://127.0.0.1:{env['MLOPS_PREFECT_PORT']}/api"
    try:
        started = run_module("infra.services", "up", *up_args, env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        values = {**read_secrets(root / "data" / "platform" / "secrets"),
                  **{k: v for k, v in env.items() if k.startswith("MLOPS_SECRET_")
                     or k in (SERVER_AUTH, SESSION_KEY, *mlflow_variables(governance))}}
        admin = account(governance, Role.ADMIN) or ""
        auth = (admin, values[governance.identities[admin].credential[4:]])
        yield {"env": env, "api": api, "root": root, "up": started.stdout, "teams": teams,
               "secrets": values, "auth": auth, "client": PrefectApi(api, auth),
               "server": f"http://127.0.0.1:{env['MLOPS_PREFECT_INTERNAL_PORT']}/api"}
    finally:
        run_module("infra.services", "down", env=env)


def team_data(stack: dict, team: str = "default") -> Path:
    """The team's own data folder on this stack, ``<data dir>/datasets-in/<team>/``: where
    `make up`'s workers accept its datasets from (``mlops.governance.locations``)."""
    folder = Path(stack["env"]["MLOPS_DATA_DIR"]) / TEAM_FOLDER / team
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def credentials(stack: dict, name: str) -> tuple[str, str]:
    """(name, secret) of an identity whose credential is an env: reference."""
    teams = stack.get("teams") or DEFAULT_TEAMS
    variable = load_governance(teams).identities[name].credential[4:]
    return name, stack["secrets"][variable]


class PrefectApi:
    """The stack's REST API as the Prefect UI and scripts call it, retrying while the server
    answers 503 (its SQLite database busy under the workers' writes), as Prefect's own
    client does. Callers make writes idempotent (names, idempotency keys)."""

    def __init__(self, api: str, auth: tuple[str, str] | None = None) -> None:
        self._client = httpx.Client(base_url=api, timeout=30.0, auth=auth)
        self.root = api.removesuffix("/api")

    def call(self, method: str, path: str, body: Any = None, *,
             content: bytes | None = None) -> httpx.Response:
        """A request (``body`` as JSON, or raw ``content``); a path that starts with
        ``/gateway`` is the gateway's own, not the API's."""
        path = f"{self.root}{path}" if path.startswith("/gateway") else path
        for attempt in range(20):
            response = self._client.request(method, path, json=body, content=content)
            if response.status_code != 503:
                return response
            time.sleep(min(0.25 * 2 ** attempt, 3.0))
        return response

    def get(self, path: str) -> Any:
        response = self.call("GET", path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.call("POST", path, body)


def deploy_from_checkout(client: PrefectApi, flow: str, entrypoint: str, name: str, pool: str,
                         queue: str, parameters: dict[str, Any],
                         tags: list[str] | None = None,
                         schema: dict[str, Any] | None = None) -> str:
    """A deployment of a flow in this checkout on a pool's queue, run from the checkout
    (with ``schema``, its parameters' schema, which the UI's form and the server use)."""
    flow_id = client.post("/flows/", {"name": flow}).json()["id"]
    body = {"name": name, "flow_id": flow_id, "work_pool_name": pool, "work_queue_name": queue,
            "entrypoint": entrypoint, "enforce_parameter_schema": schema is not None,
            "parameters": parameters, "tags": tags or [],
            "pull_steps": [{"prefect.deployments.steps.set_working_directory":
                            {"directory": str(ROOT)}}],
            **({"parameter_openapi_schema": schema} if schema else {})}
    response = client.post("/deployments/", body)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_final(client: PrefectApi, run_id: str, timeout_s: float) -> dict:
    """The flow run once it ended, or as it is when ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/flow_runs/{run_id}")
        if run["state"]["type"] in FINAL:
            return run
        time.sleep(2)
    return run


def child_runs(client: PrefectApi, run_id: str) -> dict[str, dict]:
    """A parent's child flow runs by flow name (each flow ran once)."""
    body = {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
    named = {}
    for child in client.post("/flow_runs/filter", body).json():
        flow = client.get(f"/flows/{child['flow_id']}")
        assert flow["name"] not in named, f"{flow['name']} ran twice"
        named[flow["name"]] = child
    return named


def flow_schema(function: Any) -> dict[str, Any]:
    """A flow's parameter schema, as `prefect deploy` records it."""
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(function).model_dump_for_openapi()
