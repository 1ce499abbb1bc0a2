"""The real platform for the chaos benchmark: `make up` (``python -m infra.services up``) on
the production profile (``benchmarks.chaos_services``: PostgreSQL, Redis, S3 behind a fault
proxy, and the secrets a secret store would hand it) on free ports under a temporary data
directory with a three-team teams file, the Prefect API reached through the gateway as the
platform's admin, and `make down` at the end. While it runs, this process's own settings
are the platform's (its ``MLOPS_*`` and ``AWS_*`` variables, no secrets), as an operator's
shell on the platform's machine: the inference service it starts inherits them.

Also what the faults need to find their victims: a supervised process's state (its child's
pid, its restarts) and a process's descendants (a worker's run processes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.chaos_services import Services, production_secrets, production_services
from benchmarks.servers import free_port
from infra.credentials import PRIVATE, PRIVATE_PREFIXES, account
from mlops.governance.identities import Role, load_governance
from mlops.governance.locations import TEAM_FOLDER
from mlops.processes import supervisor_state_path
from mlops.supervisor import SupervisedState, read_state

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "flows/training_pipeline.py:training_pipeline"
# The platform's accounts (the admin submits every team's runs), then the pools and teams.
PLATFORM = """\
platform:
  admins:
    - {name: ops, credential: "env:MLOPS_SECRET_OPS"}
  service_accounts:
    - name: fairshare-controller
      role: controller
      credential: "env:MLOPS_SECRET_FAIRSHARE_CONTROLLER"
fairshare: {period_s: 5, preemption: false}
pools:
  gpu: {capacity: 2, type: process}
  cpu: {capacity: 1, type: process}
teams:
"""
TEAM = "  - {{name: {name}, weight: 1, priority: {priority}, quotas: {{gpu: {gpu}, cpu: {cpu}}}}}\n"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def teams_yaml(teams: list[str]) -> str:
    """The teams file: the first team owns the cpu slot; the gpu slots are shared out."""
    rows = [TEAM.format(name=team, priority=i + 1, gpu=1 if i < 2 else 0, cpu=int(i == 0))
            for i, team in enumerate(teams)]
    return PLATFORM + "".join(rows)


class Api:
    """The stack's REST API through the gateway, retrying while the server answers 503 (busy)
    or cannot be reached for a moment; writes are made idempotent by the callers
    (idempotency keys)."""

    def __init__(self, api: str, auth: tuple[str, str]) -> None:
        self._client = httpx.Client(base_url=api, timeout=30.0, auth=auth)

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        for attempt in range(12):
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code != 503:
                return response
            time.sleep(min(0.25 * 2 ** attempt, 3.0))
        if response is None:
            raise httpx.ConnectError(f"{method} {path}: no answer")
        return response

    def get(self, path: str) -> Any:
        response = self.call("GET", path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.call("POST", path, body)


@dataclass
class Stack:
    """A running platform: its environment, data directory and an admin's API client."""

    env: dict[str, str]
    data_dir: Path
    api: Api
    services: Services

    @property
    def platform_dir(self) -> Path:
        return self.data_dir / "platform"

    def team_folder(self, team: str) -> Path:
        """The team's own data folder, where the workers accept its datasets from."""
        folder = self.data_dir / TEAM_FOLDER / team
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def supervised(self, name: str) -> SupervisedState:
        """What the supervisor of the platform's process ``name`` reports now."""
        state = read_state(supervisor_state_path(self.platform_dir / f"{name}.pid"))
        return state or SupervisedState("")


def platform_command(action: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.services", action, *args], cwd=REPO,
                          env=env, text=True, capture_output=True, timeout=600)


@contextmanager
def platform(root: Path, teams: list[str]) -> Iterator[Stack]:
    """`make up` with ``teams`` under ``root``; `make down` however the block ends."""
    teams_file = root / "teams.yaml"
    teams_file.write_text(teams_yaml(teams))
    with production_services(root) as services:
        env = {**os.environ, "MLOPS_DATA_DIR": str(root / "data"),
               "MLOPS_PREFECT_PORT": str(free_port()), "MLOPS_MLFLOW_PORT": str(free_port()),
               "MLOPS_PREFECT_INTERNAL_PORT": str(free_port()),
               "MLOPS_FAIRSHARE_PORT": str(free_port()), "MLOPS_SERVE_PORT": str(free_port()),
               "MLOPS_PROMETHEUS_PORT": str(free_port()),
               "MLOPS_NODE_EXPORTER_PORT": str(free_port()),
               "PREFECT_WORKER_QUERY_SECONDS": "2", **services.env}
        for name in [*PRIVATE, "PREFECT_API_URL"]:
            env.pop(name, None)
        env |= production_secrets(teams_file)
        try:
            started = platform_command("up", env, "--teams", str(teams_file))
            if started.returncode != 0:
                raise RuntimeError(f"make up failed:\n{started.stdout}\n{started.stderr}")
            governance = load_governance(teams_file)
            admin = account(governance, Role.ADMIN) or ""
            auth = (admin, env[governance.identities[admin].credential[4:]])
            api = Api(f"http://127.0.0.1:{env['MLOPS_PREFECT_PORT']}/api", auth)
            with operator_settings(env):
                yield Stack(env, root / "data", api, services)
        finally:
            platform_command("down", env)


@contextmanager
def operator_settings(env: dict[str, str]) -> Iterator[None]:
    """This process's environment with the platform's settings (not its secrets), restored
    at the end."""
    settings = {name: value for name, value in env.items()
                if name.startswith(("MLOPS_", "AWS_")) and name not in PRIVATE
                and not name.startswith(PRIVATE_PREFIXES)}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def deploy_pipeline(api: Api, team: str, parameters: dict[str, Any]) -> str:
    """The training pipeline of this checkout deployed on the team's gpu queue."""
    flow_id = api.post("/flows/", {"name": "training-pipeline"}).json()["id"]
    body = {"name": f"chaos-{team}", "flow_id": flow_id, "work_pool_name": "gpu",
            "work_queue_name": team, "entrypoint": PIPELINE, "parameters": parameters,
            "tags": [f"team:{team}"], "enforce_parameter_schema": False,
            "pull_steps": [{"prefect.deployments.steps.set_working_directory":
                            {"directory": str(REPO)}}]}
    response = api.post("/deployments/", body)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"deploying for {team}: {response.status_code} {response.text}")
    return response.json()["id"]


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, ... (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def flow_runs(pids: list[int]) -> list[str]:
    """The flow runs these processes run (the ``PREFECT__FLOW_RUN_ID`` a worker gives a run's
    process; a process that ended meanwhile is skipped)."""
    found = []
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        found += [entry.split(b"=", 1)[1].decode() for entry in environ
                  if entry.startswith(b"PREFECT__FLOW_RUN_ID=")]
    return sorted(set(found))
