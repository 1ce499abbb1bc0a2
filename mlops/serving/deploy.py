"""Starts, rolls and stops the CPU inference service as a background process.

The deploy stage rolls a running service of the same model: ``POST /admin/reload`` makes
it load, verify and warm the new champion beside the old one and swap, so no request
fails. A service that is not running, or serves another model, is (re)started. The local
admin token is generated once into the service directory (mode 0600) and handed to the
process through MLOPS_ADMIN_TOKEN_FILE, never on its command line.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel

from mlops.config import DatasetSpec, Settings
from mlops.processes import (
    ServerNotReady,
    running_pid,
    start_background,
    stop_background,
    wait_until_ready,
)
from mlops.registry import CHAMPION

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 180.0


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


def service_dir(settings: Settings) -> Path:
    return settings.stage_dir("service")


def admin_token_path(settings: Settings) -> Path:
    """The local service's admin token, created once with owner-only permissions."""
    path = service_dir(settings) / "admin-token"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path


def start_service(spec: DatasetSpec, settings: Settings) -> ServiceInfo:
    """Roll the running service to the champion, or (re)start one and wait until ready."""
    rolled = roll_service(spec, settings)
    if rolled is not None:
        return rolled
    stop_service(settings)
    folder = service_dir(settings)
    _check_port_free(settings.serve_host, settings.serve_port)
    spec_path = folder / f"{spec.name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    model_uri = f"models:/{spec.name}@{CHAMPION}"
    command = [sys.executable, "-m", "mlops.serving", "--model-uri", model_uri,
               "--tracking-uri", settings.tracking, "--spec", str(spec_path),
               "--data-dir", str(settings.data_dir), "--host", settings.serve_host,
               "--port", str(settings.serve_port)]
    log_path, pid_path = folder / "service.log", folder / "service.pid"
    env = {**os.environ, "MLOPS_ADMIN_TOKEN_FILE": str(admin_token_path(settings))}
    env.pop("MLOPS_ADMIN_TOKEN", None)
    process = start_background(command, log_path, pid_path, env)
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    try:
        model = _wait_ready(url, process, log_path)
    except DeployError:
        stop_service(settings)
        raise
    log.info("service pid %s serves %s v%s at %s", process.pid, spec.name, model["version"], url)
    return ServiceInfo(url=url, pid=process.pid, model_uri=model_uri,
                       model_version=str(model["version"]), log_path=str(log_path),
                       pid_path=str(pid_path))


def roll_service(spec: DatasetSpec, settings: Settings) -> ServiceInfo | None:
    """Swap the running service to the champion; None when there is none to roll."""
    folder = service_dir(settings)
    pid = running_pid(folder / "service.pid")
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    if pid is None:
        return None
    token = admin_token_path(settings).read_text().strip()
    try:
        if httpx.get(f"{url}/v1/model", timeout=5.0).json().get("name") != spec.name:
            return None  # another model: restart rather than roll
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
    log.info("service pid %s rolled to %s v%s (%s)", pid, spec.name, version,
             response.json()["status"])
    return ServiceInfo(url=url, pid=pid, model_uri=f"models:/{spec.name}@{CHAMPION}",
                       model_version=version, log_path=str(folder / "service.log"),
                       pid_path=str(folder / "service.pid"), action="rolled")


def stop_service(settings: Settings, timeout_s: float = 15.0) -> bool:
    """Stop the service named by the pid file; True when one was running."""
    return stop_background(service_dir(settings) / "service.pid", timeout_s)


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path) -> dict:
    """The served model's description, once the service reports ready."""
    try:
        wait_until_ready(f"{url}/v2/health/ready", process, log_path, READY_TIMEOUT_S)
        return httpx.get(f"{url}/v1/model", timeout=5.0).json()
    except (ServerNotReady, httpx.HTTPError, json.JSONDecodeError) as exc:
        raise DeployError(f"service did not come up: {exc}") from None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise DeployError(f"port {host}:{port} is in use by another process; "
                              "stop it or set MLOPS_SERVE_PORT") from None
