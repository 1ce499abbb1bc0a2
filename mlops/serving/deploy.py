"""Starts, rolls and stops the CPU inference services, one background process per model.

Each registered model has its own service, directory (``<data>/service/<model>/``), port
and admin token, so deploying, reloading or rolling back one team's model never touches
another's. The deploy stage rolls a running service of its model: ``POST /admin/reload``
makes it load, verify and warm the new champion beside the old one and swap, so no request
fails. A service that is not running is started: the first model on ``MLOPS_SERVE_PORT``,
each other model on the next free port, kept for it in its directory; a supervisor restarts
it (same port, same champion) when it dies. Its admin token is
generated once (mode 0600) and handed to the process through MLOPS_ADMIN_TOKEN_FILE, never
on its command line. Likewise the team's MLflow user (MLFLOW_TRACKING_USERNAME/_PASSWORD,
which MLflow's client reads) reaches the service through its environment, and no other
team's password does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import sys
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel

from mlops.config import MLFLOW_PASSWORD_PREFIX, DatasetSpec, MlflowAuth, Settings
from mlops.processes import (
    ServerNotReady,
    Supervised,
    running_pid,
    start_supervised,
    stop_background,
    wait_until_ready,
)
from mlops.registry import CHAMPION

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 180.0
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DeployError(RuntimeError):
    """The service did not come up; the message carries the end of its log."""


class ServiceInfo(BaseModel):
    url: str
    pid: int
    model_uri: str
    model_version: str
    log_path: str
    pid_path: str
    action: str = "started"  # or "rolled": the running service swapped to the champion


def service_dir(settings: Settings, model: str) -> Path:
    """One model's service: its pid, log, port, spec and admin token."""
    if not _MODEL_NAME.match(model):
        raise DeployError(f"model name {model!r} cannot name a service directory")
    return settings.stage_dir(f"service/{model}")


def admin_token_path(settings: Settings, model: str) -> Path:
    """A model's service admin token, created once with owner-only permissions."""
    path = service_dir(settings, model) / "admin-token"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path


def start_service(spec: DatasetSpec, settings: Settings, model: str,
                  auth: MlflowAuth | None = None) -> ServiceInfo:
    """Roll the model's running service to its champion, or (re)start it and wait until
    ready. ``model`` is the registered model's name (``mlops.registry.model_name``); the
    service reads the registry as ``auth``."""
    rolled = roll_service(spec, settings, model)
    if rolled is not None:
        return rolled
    stop_service(settings, model)
    folder = service_dir(settings, model)
    port = _assigned_port(settings, model)
    if not _port_free(settings.serve_host, port):  # taken by another process since
        (folder / "port").unlink()
        port = _assigned_port(settings, model)
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    model_uri = f"models:/{model}@{CHAMPION}"
    command = [sys.executable, "-m", "mlops.serving", "--model-uri", model_uri,
               "--tracking-uri", settings.tracking, "--spec", str(spec_path),
               "--data-dir", str(settings.data_dir), "--host", settings.serve_host,
               "--port", str(port), "--sample-rate", str(settings.sample_rate),
               "--sample-flush-s", str(settings.sample_flush_s)]
    log_path, pid_path = folder / "service.log", folder / "service.pid"
    env = _service_env(admin_token_path(settings, model), auth)
    process = start_supervised(command, log_path, pid_path, env)  # restarted when it dies
    url = f"http://{settings.serve_host}:{port}"
    try:
        served = _wait_ready(url, process, log_path)
    except DeployError:
        stop_service(settings, model)
        raise
    log.info("service pid %s serves %s v%s at %s", process.pid, model, served["version"], url)
    write_scrape_target(settings, model, f"{settings.serve_host}:{port}")
    return ServiceInfo(url=url, pid=process.pid, model_uri=model_uri,
                       model_version=str(served["version"]), log_path=str(log_path),
                       pid_path=str(pid_path))


def _service_env(token: Path, auth: MlflowAuth | None) -> dict[str, str]:
    """The worker's environment without its credentials (Prefect's, every team's MLflow
    password), plus the service's own: its admin token file and its team's MLflow user."""
    private = ("MLOPS_ADMIN_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
               "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")
    env = {name: value for name, value in os.environ.items()
           if name not in private and not name.startswith(MLFLOW_PASSWORD_PREFIX)}
    env["MLOPS_ADMIN_TOKEN_FILE"] = str(token)
    if auth is not None:
        env |= {"MLFLOW_TRACKING_USERNAME": auth.username,
                "MLFLOW_TRACKING_PASSWORD": auth.password.get_secret_value()}
    return env


def roll_service(spec: DatasetSpec, settings: Settings, model: str) -> ServiceInfo | None:
    """Swap the model's running service to its champion; None when there is none to roll."""
    folder = service_dir(settings, model)
    pid = running_pid(folder / "service.pid")
    if pid is None:
        return None
    url = f"http://{settings.serve_host}:{_assigned_port(settings, model)}"
    token = admin_token_path(settings, model).read_text().strip()
    try:
        if httpx.get(f"{url}/v1/model", timeout=5.0).json().get("name") != model:
            return None  # not this model's service: restart rather than roll
        response = httpx.post(f"{url}/admin/reload", timeout=READY_TIMEOUT_S,
                              headers={"Authorization": f"Bearer {token}"})
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        log.warning("cannot roll the service at %s (%s); restarting it", url, exc)
        return None
    if response.status_code == 409:
        raise DeployError(f"the service refused the new champion and still serves the old "
                          f"one: {response.json().get('detail')}")
    if response.status_code != 200:
        log.warning("reload answered %s; restarting the service", response.status_code)
        return None
    version = str(response.json()["serving"])
    log.info("service pid %s rolled to %s v%s (%s)", pid, model, version,
             response.json()["status"])
    return ServiceInfo(url=url, pid=pid, model_uri=f"models:/{model}@{CHAMPION}",
                       model_version=version, log_path=str(folder / "service.log"),
                       pid_path=str(folder / "service.pid"), action="rolled")


def stop_service(settings: Settings, model: str | None = None, timeout_s: float = 15.0) -> bool:
    """Stop one model's service, or every model's; True when one was running."""
    models = [model] if model else served_models(settings)
    stopped = [stop_background(service_dir(settings, name) / "service.pid", timeout_s)
               for name in models]
    for name in models:
        scrape_target_path(settings, name).unlink(missing_ok=True)
    return any(stopped)


def scrape_target_path(settings: Settings, model: str) -> Path:
    """The model's service in Prometheus' file-based discovery (``infra.prometheus_config``
    points its ``serving`` job at this folder; Prometheus rereads it when it changes)."""
    return settings.data_dir / "monitoring" / "targets" / f"serving-{model}.json"


def write_scrape_target(settings: Settings, model: str, address: str) -> None:
    team = model.split(".", 1)[0]
    body = json.dumps([{"targets": [address], "labels": {"model": model, "team": team}}])
    path = scrape_target_path(settings, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Renamed into place: Prometheus may read the folder at any moment. (Not
    # mlops.atomic_files: the serving package does not depend on it.)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body)
    os.replace(tmp, path)


def served_models(settings: Settings) -> list[str]:
    """The models that have a service directory (running or not)."""
    root = settings.data_dir / "service"
    return sorted(p.parent.name for p in root.glob("*/port")) if root.is_dir() else []


def _wait_ready(url: str, process: Supervised, log_path: Path) -> dict:
    """The served model's description, once the service reports ready."""
    try:
        wait_until_ready(f"{url}/v2/health/ready", process, log_path, READY_TIMEOUT_S)
        return httpx.get(f"{url}/v1/model", timeout=5.0).json()
    except (ServerNotReady, httpx.HTTPError, json.JSONDecodeError) as exc:
        raise DeployError(f"service did not come up: {exc}") from None


def _assigned_port(settings: Settings, model: str) -> int:
    """The model's port: kept in its directory once chosen; the first free one from
    MLOPS_SERVE_PORT up that no other model holds."""
    path = service_dir(settings, model) / "port"
    if path.exists():
        return int(path.read_text())
    taken = {int((settings.data_dir / "service" / name / "port").read_text())
             for name in served_models(settings)}
    for port in range(settings.serve_port, min(settings.serve_port + 100, 65536)):
        if port not in taken and _port_free(settings.serve_host, port):
            path.write_text(str(port))
            return port
    raise DeployError(f"no free port on {settings.serve_host} from {settings.serve_port} up; "
                      "stop a service or set MLOPS_SERVE_PORT")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True
