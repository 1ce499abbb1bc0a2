"""Starts and stops the CPU inference service as a background process (pid and log file)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel

from mlops.config import DatasetSpec, Settings
from mlops.processes import start_background, stop_background, tail
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


def service_dir(settings: Settings) -> Path:
    return settings.stage_dir("service")


def start_service(spec: DatasetSpec, settings: Settings) -> ServiceInfo:
    """Stop the running service, if any, then start one on the champion and wait until ready."""
    stop_service(settings)
    folder = service_dir(settings)
    _check_port_free(settings.serve_host, settings.serve_port)
    spec_path = folder / f"{spec.name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    model_uri = f"models:/{spec.name}@{CHAMPION}"
    command = [sys.executable, "-m", "mlops.service", "--model-uri", model_uri,
               "--tracking-uri", settings.tracking, "--spec", str(spec_path),
               "--data-dir", str(settings.data_dir), "--host", settings.serve_host,
               "--port", str(settings.serve_port)]
    log_path, pid_path = folder / "service.log", folder / "service.pid"
    process = start_background(command, log_path, pid_path)
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


def stop_service(settings: Settings, timeout_s: float = 15.0) -> bool:
    """Stop the service named by the pid file; True when one was running."""
    return stop_background(service_dir(settings) / "service.pid", timeout_s)


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(f"service exited with code {process.returncode}:\n"
                              f"{tail(log_path)}")
        try:
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return httpx.get(f"{url}/v1/model", timeout=5.0).json()
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise DeployError(f"service not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log_path)}")


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise DeployError(f"port {host}:{port} is in use by another process; "
                              "stop it or set MLOPS_SERVE_PORT") from None
