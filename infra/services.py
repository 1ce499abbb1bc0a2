"""Platform mode on one machine: `make up` / `make down` / `make status`.

Starts (idempotently) a Prefect server (SQLite under the data directory) that requires its
auth string, behind the gateway (``infra.gateway``: the login, who may do what) on the
public Prefect port, an MLflow tracking server with its own authentication
(``--app-name basic-auth``; one user per team, made by ``infra.mlflow_users``, other teams
may read), provisions the pools, team queues and limits from infra/teams.yaml (as the
file's first admin, through the gateway), and one process worker per pool, whose runs
track on that MLflow server as their team's user. Each runs in the background with a pid
file and a log under ``<data_dir>/platform/``.

Credentials (``infra.credentials``): each process gets only its own, through its
environment, never its command line: the server and the workers the server's auth string
(workers run the deployed flows, which need the whole API), the gateway every identity's
secret, the fair-share controller its service account, provisioning the admin's, MLflow
its admin's password and (production) PostgreSQL's, the workers every team's MLflow
password (see ``_worker_mlflow_env`` for the limit of that).

With ``MLOPS_PROFILE=production`` (`make up PROFILE=production`) the same servers run on
the services a team operates: first ``infra.production`` makes PostgreSQL's role and
databases, the S3 bucket (with default encryption) and Redis ready, then the Prefect server
stores its state in PostgreSQL and MLflow its runs in PostgreSQL and its artifacts in S3.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infra import prometheus_config
from infra.credentials import (
    MLFLOW_ADMIN,
    MLFLOW_FLASK_KEY,
    PRIVATE,
    PRIVATE_PREFIXES,
    SERVER_AUTH,
    SESSION_KEY,
    account,
    auth_string,
    login_name,
    mlflow_variables,
    platform_secrets,
    read_secrets,
    secrets_file,
)
from infra.mlflow_users import (
    ADMIN as MLFLOW_ADMIN_USER,
)
from infra.mlflow_users import (
    MlflowUsersError,
    auth_config_path,
    ensure_team_users,
    write_auth_config,
)
from infra.production import ServiceUnreachable, prepare, server_environment
from infra.worker_settings import worker_environment
from mlops.config import MLFLOW_PASSWORD_PREFIX, Settings
from mlops.fairshare.teams import load_teams
from mlops.governance.identities import Governance, GovernanceError, Role, load_governance
from mlops.processes import (
    ServerNotReady,
    Supervised,
    running_pid,
    start_supervised,
    stop_background,
    supervisor_state_path,
    tail,
    wait_until_ready,
)
from mlops.supervisor import describe, read_state

BIN = Path(sys.executable).parent
POOLS = ("gpu", "cpu")
READY_TIMEOUT_S = 180.0
CONTROLLER = "fairshare-controller"
DEFAULT_TEAMS = Path(__file__).with_name("teams.yaml")


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str | None  # None: a worker, healthy while its process lives
    env: dict[str, str] = field(default_factory=dict)  # on top of the platform's
    on_exit: list[str] = field(default_factory=list)  # run after each death, before restart


def services(settings: Settings, teams_file: Path | None = None,
             secrets: Mapping[str, str] | None = None) -> list[Service]:
    """What `up` starts, in order (`down` stops them in reverse); the fair-share controller
    when ``teams_file`` turns it on (for `down` and `status`: when its pid file exists).
    ``secrets`` (`up` only) gives each process its credentials."""
    host, values = settings.platform_host, secrets or {}
    server, public = settings.prefect_server_url, f"http://{host}:{settings.prefect_port}"
    internal = server.rsplit(":", 1)[1]
    extra = server_environment(settings) if settings.profile == "production" else {}
    prefect = Service("prefect-server", [str(BIN / "prefect"), "server", "start", "--host",
                                         "127.0.0.1", "--port", internal],
                      f"{server}/api/health",
                      {**extra.get("prefect-server", {}), **_server_env(settings, values)})
    gateway = Service("prefect-gateway", [
        sys.executable, "-m", "infra.gateway", "--teams", str(teams_file or DEFAULT_TEAMS),
        "--host", host, "--port", str(settings.prefect_port), "--upstream", server],
        f"{public}/gateway/health", _without_mlflow(values))
    mlflow = _mlflow_server(settings, values, extra.get("mlflow-server", {}))
    # Links in the workers' logs point at the gateway, where people sign in.
    # Their poll interval and their runs' heartbeats: infra.worker_settings.
    worker_env = ({"PREFECT_API_URL": f"{server}/api", "PREFECT_UI_URL": public,
                   "PREFECT_API_AUTH_STRING": values[SERVER_AUTH],
                   **worker_environment(os.environ),
                   **_worker_mlflow_env(settings, values)} if values else {})
    workers = [Service(f"worker-{pool}", [str(BIN / "prefect"), "worker", "start", "--pool",
                                          pool, "--type", "process", "--name", f"{pool}-{host}"],
                       None, worker_env) for pool in POOLS]
    controller = _controller(settings, teams_file, values)
    return [prefect, gateway, mlflow, *workers, *controller,
            *_monitoring(settings, bool(controller))]


def _monitoring(settings: Settings, controller: bool) -> list[Service]:
    """The node exporter and Prometheus (last: every target they scrape is up by then);
    none where an external Prometheus is configured (``MLOPS_PROMETHEUS_URL``)."""
    if settings.prometheus_url:
        return []
    host = settings.platform_host
    return [Service("node-exporter", prometheus_config.node_exporter_command(settings),
                    f"http://{host}:{settings.node_exporter_port}/metrics"),
            Service("prometheus", prometheus_config.prometheus_command(settings),
                    f"http://{host}:{settings.prometheus_port}/-/ready")]


def _mlflow_server(settings: Settings, values: Mapping[str, str],
                   extra: Mapping[str, str]) -> Service:
    """MLflow with its basic-auth app. No password on its command line (`ps` shows it to
    every local user): the admin's comes as MLFLOW_AUTH_ADMIN_PASSWORD, PostgreSQL's as
    PGPASSWORD (libpq's own variable), for the store and the auth database alike."""
    env = {**extra, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config_path(settings)),
           # MLflow 3's job runner (GenAI jobs, which the platform does not use) would add
           # five huey consumer processes of ~270 MB each; an operator's setting wins.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    if values:
        env |= {"MLFLOW_AUTH_ADMIN_PASSWORD": values[MLFLOW_ADMIN],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": values[MLFLOW_FLASK_KEY]}
    if settings.profile == "production":  # PostgreSQL store, artifacts proxied to S3
        store = ["--backend-store-uri",
                 settings.database_url("mlflow", "postgresql+psycopg2", with_password=False),
                 "--serve-artifacts",
                 "--artifacts-destination", f"s3://{settings.s3_bucket}/mlflow"]
        if settings.pg_password:
            env["PGPASSWORD"] = settings.pg_password.get_secret_value()
    else:
        store = ["--backend-store-uri", settings.tracking, "--default-artifact-root",
                 settings.artifacts_dir.as_uri()]
    # --expose-prometheus: /metrics (behind the same basic auth) for Prometheus' mlflow job.
    metrics = settings.data_dir / "platform" / "mlflow-metrics"
    return Service("mlflow-server", [str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
                                     "--host", settings.platform_host,
                                     "--port", str(settings.mlflow_port), *store,
                                     "--workers", "1", "--expose-prometheus", str(metrics)],
                   f"{settings.mlflow_url}/health", env)


def _without_mlflow(values: Mapping[str, str]) -> dict[str, str]:
    """The gateway's secrets: every Prefect identity's, none of MLflow's."""
    return {name: value for name, value in values.items()
            if name not in (MLFLOW_ADMIN, MLFLOW_FLASK_KEY)
            and not name.startswith(MLFLOW_PASSWORD_PREFIX)}


def _worker_mlflow_env(settings: Settings, values: Mapping[str, str]) -> dict[str, str]:
    """Runs track on the MLflow server (so its permissions apply), and the workers hold every
    team's MLflow password: a run takes only its own team's (``Settings.mlflow_auth``), and
    hands only that one to the service it deploys. The limit: a process worker runs every
    team's flow code as one OS user, so code that reads its own environment could read the
    other teams' passwords; per-team workers (or Kubernetes pods with a per-team secret)
    close that gap."""
    return {"MLOPS_TRACKING_URI": settings.mlflow_url,
            **{name: value for name, value in values.items()
               if name.startswith(MLFLOW_PASSWORD_PREFIX)}}


def _server_env(settings: Settings, values: Mapping[str, str]) -> dict[str, str]:
    """The server requires its auth string; its UI calls the API through the gateway."""
    if not values:
        return {}
    return {"PREFECT_SERVER_API_AUTH_STRING": values[SERVER_AUTH],
            "PREFECT_API_ENABLE_METRICS": "true",  # /api/metrics, for Prometheus
            "PREFECT_UI_API_URL": settings.prefect_api_url,
            "PREFECT_UI_URL": settings.prefect_api_url.removesuffix("/api")}


def _controller(settings: Settings, teams_file: Path | None,
                values: Mapping[str, str]) -> list[Service]:
    if teams_file is None:
        wanted = (settings.data_dir / "platform" / f"{CONTROLLER}.pid").exists()
    else:
        fairshare = load_teams(teams_file).fairshare
        wanted = fairshare is not None and fairshare.enabled
    if not wanted:
        return []
    port = str(settings.fairshare_port)
    command = [sys.executable, "-m", "flows.fairshare_controller", "--metrics-port", port]
    env = {}
    if teams_file is not None:
        command += ["--file", str(teams_file)]
        if values:  # through the gateway, as its service account
            governance = load_governance(teams_file)
            name = account(governance, Role.CONTROLLER) or ""
            env = {"PREFECT_API_AUTH_STRING": auth_string(governance, name, values) or ""}
    # Killed, it would leave borrowed limits that starve a queue's owner: back to each
    # team's guarantee before it is started again.
    fall_back = [*command[:3], "--file", str(teams_file or DEFAULT_TEAMS), "--fall-back"]
    return [Service(CONTROLLER, command,
                    f"http://{settings.platform_host}:{port}/metrics", env, fall_back)]


def environment(settings: Settings) -> dict[str, str]:
    """Every process of the platform talks to the same Prefect API (the gateway) and data
    directory; no secret of the caller's environment is inherited."""
    inherited = {name: value for name, value in os.environ.items()
                 if name not in PRIVATE and not name.startswith(PRIVATE_PREFIXES)}
    return {**inherited, "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_HOME": str(settings.data_dir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLOPS_DATA_DIR": str(settings.data_dir)}


def up(settings: Settings, teams_file: Path) -> None:
    """Start what is not running yet; provision pools and queues before their workers."""
    folder = settings.stage_dir("platform")
    settings.stage_dir("prefect")
    governance = _governance(teams_file)
    if settings.profile == "production":
        try:
            print("\n".join(prepare(settings)))
        except ServiceUnreachable as exc:
            raise SystemExit(f"production profile: {exc}") from None
    values = _secrets(settings, governance, teams_file)
    # The runs' dataset locations and residency are checked against this teams file.
    env = {**environment(settings), "MLOPS_TEAMS_FILE": str(teams_file.resolve())}
    admin = auth_string(governance, account(governance, Role.ADMIN) or "", values) or ""
    write_auth_config(settings)
    if not settings.prometheus_url:
        prometheus_config.require_binaries()
    prometheus_config.write_config(
        settings, bool(_controller(settings, teams_file, {})),
        {"mlflow": f"{MLFLOW_ADMIN_USER}:{values[MLFLOW_ADMIN]}", "prefect": values[SERVER_AUTH]})
    for service in services(settings, teams_file, values):
        if service.name == f"worker-{POOLS[0]}":
            _provision(teams_file, {**env, "PREFECT_API_AUTH_STRING": admin})
        _ensure_running(service, folder, env)
        if service.name == "mlflow-server":
            _mlflow_users(settings, governance, values)
    print(f"Prefect UI: http://{settings.platform_host}:{settings.prefect_port} "
          f"(the gateway: {_how_to_log_in(settings, governance)})")
    print(f"MLflow UI:  {settings.mlflow_url}")
    print(f"Prometheus: {settings.prometheus}")
    if not settings.prometheus_url:
        _await_first_scrapes(settings)


def _await_first_scrapes(settings: Settings) -> None:
    """Prometheus scrapes each new target within one interval: wait for that, so that
    `make status` right after `up` tells the truth, and name a target that is down."""
    deadline = time.monotonic() + settings.scrape_interval_s + 10.0
    while True:
        try:
            found = prometheus_config.targets(settings.prometheus)
        except (httpx.HTTPError, ValueError, KeyError):
            found = []
        waiting = [t for t in found if t.health == "unknown"]
        if found and not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for target in found:
        if target.health != "up":
            print(f"prometheus: target {target.job} {target.instance} is {target.health} "
                  f"{target.error}".rstrip())


def _mlflow_users(settings: Settings, governance: Governance, values: Mapping[str, str]) -> None:
    """Each team's MLflow user, with its current password (idempotent)."""
    try:
        print("\n".join(ensure_team_users(settings.mlflow_url, values[MLFLOW_ADMIN],
                                          sorted(governance.teams), values)))
    except (MlflowUsersError, httpx.HTTPError) as exc:
        raise SystemExit(f"mlflow-server: {exc}") from None


def _governance(teams_file: Path) -> Governance:
    try:
        governance = load_governance(teams_file)
    except GovernanceError as exc:
        raise SystemExit(str(exc)) from None
    if account(governance, Role.ADMIN) is None:
        raise SystemExit(f"{teams_file}: platform.admins is empty: nobody could provision the "
                         "pools and queues or sign in to the gateway")
    return governance


def _secrets(settings: Settings, governance: Governance, teams_file: Path) -> dict[str, str]:
    """Every secret the stack needs; on the production profile, refuse what is missing."""
    values = platform_secrets(settings, governance, os.environ)
    needed = [SERVER_AUTH, SESSION_KEY, *mlflow_variables(governance)]
    for role in (Role.ADMIN, *((Role.CONTROLLER,) if _controller(settings, teams_file, {})
                              else ())):
        name = account(governance, role)
        if name is None:
            raise SystemExit(f"{teams_file}: the fair-share controller needs a service "
                             "account with role controller in platform.service_accounts")
        credential = governance.identities[name].credential
        if not credential.startswith("env:"):
            raise SystemExit(f"{teams_file}: {name}'s credential must be an env: reference "
                             "for `make up` to hand it to its process")
        needed.append(credential[4:])
    missing = [name for name in needed if name not in values]
    if missing:
        raise SystemExit(f"missing secrets (set them in the environment): {', '.join(missing)}")
    return values


def _how_to_log_in(settings: Settings, governance: Governance) -> str:
    """Who to sign in as and where the password is, never the password itself."""
    name = login_name(governance)
    credential = governance.identities[name].credential if name else ""
    if not credential.startswith("env:"):
        return f"sign in as `{name}`"
    variable = credential[4:]
    stored = settings.profile == "local" and variable in read_secrets(secrets_file(settings))
    where = f"in {secrets_file(settings)}" if stored else "in the environment"
    return f"sign in as `{name}`, the password is {variable} {where}"


def _ensure_running(service: Service, folder: Path, env: dict[str, str]) -> None:
    pid_path, log_path = folder / f"{service.name}.pid", folder / f"{service.name}.log"
    pid = running_pid(pid_path)
    if pid:
        print(f"{service.name}: already running (pid {pid})")
        return
    process = start_supervised(service.command, log_path, pid_path, {**env, **service.env},
                               shlex.join(service.on_exit))
    _wait_healthy(service, process, log_path)
    print(f"{service.name}: started (pid {process.pid}, restarted when it dies), "
          f"log {log_path}")


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
    """One line per service, with its restarts and a crash loop; exit code 0 only when all
    run and answer and none is in a crash loop."""
    folder, healthy = settings.data_dir / "platform", True
    for service in services(settings):
        pid_path = folder / f"{service.name}.pid"
        pid = running_pid(pid_path)
        supervised = read_state(supervisor_state_path(pid_path)) if pid else None
        child = supervised.pid if supervised else pid
        answers = child is not None and (service.health_url is None
                                         or _answers(service.health_url))
        healthy &= answers and not (supervised and supervised.crash_loop)
        state = (f"running (pid {child})" if child else "restarting" if pid else "stopped")
        notes = [note for note in ("" if answers or not child else "not answering",
                                   describe(supervised)) if note]
        print(f"{service.name:21} {state}{''.join(f', {note}' for note in notes)}")
    return 0 if _scrape_targets(settings) and healthy else 1


def _scrape_targets(settings: Settings) -> bool:
    """Prometheus' URL and each target it scrapes; True when every one is up."""
    print(f"Prometheus: {settings.prometheus}")
    try:
        found = prometheus_config.targets(settings.prometheus)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"  not answering: {exc}")
        return False
    for target in sorted(found, key=lambda t: (t.job, t.instance)):
        error = f" ({target.error})" if target.error else ""
        print(f"  {target.job:21} {target.instance:23} {target.health}{error}")
    return bool(found) and all(target.health == "up" for target in found)


def _wait_healthy(service: Service, process: Supervised, log_path: Path) -> None:
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
    parser.add_argument("--teams", type=Path, default=DEFAULT_TEAMS)
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
