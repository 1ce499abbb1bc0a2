"""Platform mode on one machine: `make up` / `make down` / `make status`.

Starts (idempotently) a Prefect server (SQLite under the data directory), an MLflow
tracking server with its UI on the same store the pipeline writes, provisions the pools,
team queues and limits from infra/teams.yaml, and one process worker per pool. Each runs
in the background with a pid file and a log under ``<data_dir>/platform/``.

With ``MLOPS_PROFILE=production`` (`make up PROFILE=production`) the same servers run on
the services a team operates: first ``infra.production`` makes PostgreSQL's role and
databases, the S3 bucket (with default encryption) and Redis ready, then the Prefect server
stores its state in PostgreSQL and MLflow its runs in PostgreSQL and its artifacts in S3.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infra.production import ServiceUnreachable, prepare, server_environment
from mlops.config import Settings
from mlops.fairshare.teams import load_teams
from mlops.processes import (
    ServerNotReady,
    running_pid,
    start_background,
    stop_background,
    tail,
    wait_until_ready,
)

BIN = Path(sys.executable).parent
POOLS = ("gpu", "cpu")
READY_TIMEOUT_S = 180.0
CONTROLLER = "fairshare-controller"


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str | None  # None: a worker, healthy while its process lives
    env: dict[str, str] = field(default_factory=dict)  # on top of the platform's


def services(settings: Settings, teams_file: Path | None = None) -> list[Service]:
    """What `up` starts, in order (`down` stops them in reverse); the fair-share controller
    when ``teams_file`` turns it on (for `down` and `status`: when its pid file exists)."""
    host = settings.platform_host
    prefect = Service("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", host,
                                         "--port", str(settings.prefect_port)],
                      f"{settings.prefect_api_url}/health")
    if settings.profile == "production":  # PostgreSQL store, artifacts proxied to S3
        store = ["--backend-store-uri", settings.database_url("mlflow", "postgresql+psycopg2"),
                 "--serve-artifacts",
                 "--artifacts-destination", f"s3://{settings.s3_bucket}/mlflow"]
    else:
        store = ["--backend-store-uri", settings.tracking, "--default-artifact-root",
                 settings.artifacts_dir.as_uri()]
    extra = server_environment(settings) if settings.profile == "production" else {}
    prefect = Service(prefect.name, prefect.command, prefect.health_url,
                      extra.get("prefect-server", {}))
    mlflow = Service("mlflow-server", [str(BIN / "mlflow"), "server", "--host", host, "--port",
                                       str(settings.mlflow_port), *store, "--workers", "1"],
                     f"{settings.mlflow_url}/health", extra.get("mlflow-server", {}))
    workers = [Service(f"worker-{pool}", [str(BIN / "prefect"), "worker", "start", "--pool",
                                          pool, "--type", "process", "--name", f"{pool}-{host}"],
                       None) for pool in POOLS]
    return [prefect, mlflow, *workers, *_controller(settings, teams_file)]


def _controller(settings: Settings, teams_file: Path | None) -> list[Service]:
    if teams_file is None:
        wanted = (settings.data_dir / "platform" / f"{CONTROLLER}.pid").exists()
    else:
        fairshare = load_teams(teams_file).fairshare
        wanted = fairshare is not None and fairshare.enabled
    if not wanted:
        return []
    port = str(settings.fairshare_port)
    command = [sys.executable, "-m", "flows.fairshare_controller", "--metrics-port", port]
    if teams_file is not None:
        command += ["--file", str(teams_file)]
    return [Service(CONTROLLER, command,
                    f"http://{settings.platform_host}:{port}/metrics")]


def environment(settings: Settings) -> dict[str, str]:
    """Every process of the platform talks to the same Prefect API and data directory."""
    return {**os.environ, "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_HOME": str(settings.data_dir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLOPS_DATA_DIR": str(settings.data_dir)}


def up(settings: Settings, teams_file: Path) -> None:
    """Start what is not running yet; provision pools and queues before their workers."""
    folder = settings.stage_dir("platform")
    settings.stage_dir("prefect")
    if settings.profile == "production":
        try:
            print("\n".join(prepare(settings)))
        except ServiceUnreachable as exc:
            raise SystemExit(f"production profile: {exc}") from None
    env = environment(settings)
    for service in services(settings, teams_file):
        if service.name == f"worker-{POOLS[0]}":
            _provision(teams_file, env)
        _ensure_running(service, folder, env)
    print(f"Prefect UI: http://{settings.platform_host}:{settings.prefect_port}")
    print(f"MLflow UI:  {settings.mlflow_url}")


def _ensure_running(service: Service, folder: Path, env: dict[str, str]) -> None:
    pid_path, log_path = folder / f"{service.name}.pid", folder / f"{service.name}.log"
    pid = running_pid(pid_path)
    if pid:
        print(f"{service.name}: already running (pid {pid})")
        return
    process = start_background(service.command, log_path, pid_path, {**env, **service.env})
    _wait_healthy(service, process, log_path)
    print(f"{service.name}: started (pid {process.pid}), log {log_path}")


def _provision(teams_file: Path, env: dict[str, str]) -> None:
    """Pools must exist before their workers start; provisioning is idempotent."""
    result = subprocess.run([sys.executable, "-m", "infra.provision", "--file", str(teams_file)],
                            env=env, capture_output=True, text=True, timeout=300)
    print(result.stdout.rstrip())
    if result.returncode != 0:
        raise SystemExit(f"provisioning failed:\n{result.stderr[-3000:]}{result.stdout[-2000:]}")


def down(settings: Settings) -> None:
    folder = settings.data_dir / "platform"
    for service in reversed(services(settings)):
        stopped = stop_background(folder / f"{service.name}.pid")
        print(f"{service.name}: {'stopped' if stopped else 'not running'}")


def status(settings: Settings) -> int:
    """One line per service; exit code 0 only when all run and answer."""
    folder, healthy = settings.data_dir / "platform", True
    for service in services(settings):
        pid = running_pid(folder / f"{service.name}.pid")
        answers = pid is not None and (service.health_url is None or _answers(service.health_url))
        healthy &= answers
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"{service.name:15} {state}{'' if answers or not pid else ', not answering'}")
    return 0 if healthy else 1


def _wait_healthy(service: Service, process: subprocess.Popen, log_path: Path) -> None:
    if service.health_url is not None:
        try:
            return wait_until_ready(service.health_url, process, log_path, READY_TIMEOUT_S)
        except ServerNotReady as exc:
            raise SystemExit(f"{service.name}: {exc}") from None
    time.sleep(3.0)  # a worker that cannot reach its pool exits at once
    if process.poll() is not None:
        raise SystemExit(f"{service.name} exited ({process.returncode}):\n{tail(log_path)}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.services", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--teams", type=Path, default=Path(__file__).with_name("teams.yaml"))
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "up":
        up(settings, args.teams)
        return 0
    if args.command == "down":
        down(settings)
        return 0
    return status(settings)


if __name__ == "__main__":
    sys.exit(main())
