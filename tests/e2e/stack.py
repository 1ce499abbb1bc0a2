"""The platform stack for end-to-end tests: `make up` on free ports under a temporary data
directory, the platform's commands run as a user runs them, and `make down` at the end."""

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

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


@contextmanager
def running_stack(root: Path, *up_args: str, **extra_env: str) -> Iterator[dict]:
    """Yields the stack's environment, API URL, folder and what `up` printed."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(root / "data"),
           "MLOPS_PREFECT_PORT": str(free_port()), "MLOPS_MLFLOW_PORT": str(free_port()),
           "MLOPS_FAIRSHARE_PORT": str(free_port()),
           **extra_env}
    env.pop("PREFECT_API_URL", None)
    api = f"http://127.0.0.1:{env['MLOPS_PREFECT_PORT']}/api"
    try:
        started = run_module("infra.services", "up", *up_args, env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"env": env, "api": api, "root": root, "up": started.stdout}
    finally:
        run_module("infra.services", "down", env=env)


class PrefectApi:
    """The stack's REST API as the Prefect UI and scripts call it, retrying while the server
    answers 503 (its SQLite database busy under the workers' writes), as Prefect's own
    client does. Callers make writes idempotent (names, idempotency keys)."""

    def __init__(self, api: str) -> None:
        self._client = httpx.Client(base_url=api, timeout=30.0)

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        for attempt in range(20):
            response = self._client.request(method, path, json=body)
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
                         queue: str, parameters: dict[str, Any]) -> str:
    """A deployment of a flow in this checkout on a pool's queue, run from the checkout."""
    flow_id = client.post("/flows/", {"name": flow}).json()["id"]
    body = {"name": name, "flow_id": flow_id, "work_pool_name": pool, "work_queue_name": queue,
            "entrypoint": entrypoint, "enforce_parameter_schema": False,
            "parameters": parameters,
            "pull_steps": [{"prefect.deployments.steps.set_working_directory":
                            {"directory": str(ROOT)}}]}
    response = client.post("/deployments/", body)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_final(api: str, run_id: str, timeout_s: float) -> dict:
    """The flow run once it ended, or as it is when ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    client = PrefectApi(api)
    while time.monotonic() < deadline:
        run = client.get(f"/flow_runs/{run_id}")
        if run["state"]["type"] in FINAL:
            return run
        time.sleep(2)
    return run


def child_runs(api: str, run_id: str) -> dict[str, dict]:
    """A parent's child flow runs by flow name (each flow ran once)."""
    client = PrefectApi(api)
    body = {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
    named = {}
    for child in client.post("/flow_runs/filter", body).json():
        flow = client.get(f"/flows/{child['flow_id']}")
        assert flow["name"] not in named, f"{flow['name']} ran twice"
        named[flow["name"]] = child
    return named
