"""Prometheus for the platform: its configuration, what it scrapes, and whether all is up.

`make up` (``infra.services``) starts Debian's ``prometheus`` with the file ``write_config``
renders under ``<data_dir>/platform/prometheus/`` and the rules of ``infra/prometheus/rules``,
and the machine's ``prometheus-node-exporter``, whose textfile collector exports the training
runs' series (``mlops.training.telemetry``). Jobs:

- ``prometheus`` itself; ``node``: the workers' machine and the training runs on it;
- ``fairshare-controller``: the controller's gauges (when it runs);
- ``mlflow``: the tracking server's ``--expose-prometheus`` series, behind its basic auth
  (the admin's credentials, in a 0600 file Prometheus reads);
- ``prefect``: the Prefect server's ``/api/metrics`` (``PREFECT_API_ENABLE_METRICS``), with
  its auth string;
- ``serving``: every inference service the deploy stage starts, through file-based discovery
  (``mlops.serving.deploy.write_scrape_target``), so a new model's service is scraped without
  a reload.

With ``MLOPS_PROMETHEUS_URL`` set (an external Prometheus, as on the production profile) `up`
starts neither process; the same file is written for that Prometheus's operator to include.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from mlops.atomic_files import write_atomic
from mlops.config import Settings

RULES = Path(__file__).with_name("prometheus") / "rules"
BINARIES = {"prometheus": "prometheus", "node-exporter": "prometheus-node-exporter"}


def folder(settings: Settings) -> Path:
    return settings.data_dir / "platform" / "prometheus"


def targets_dir(settings: Settings) -> Path:
    """Where the deploy stage writes one file per inference service."""
    return settings.data_dir / "monitoring" / "targets"


def binary(name: str) -> str:
    """Debian's binary where it is installed, else its bare name (``require_binaries``
    says what is missing before anything is started)."""
    program = BINARIES[name]
    return shutil.which(program) or shutil.which(program, path="/usr/bin:/usr/sbin") or program


def require_binaries() -> None:
    """A clear error, before `up` starts anything, when Debian's packages are missing."""
    missing = [program for program in BINARIES.values()
               if shutil.which(program) is None
               and shutil.which(program, path="/usr/bin:/usr/sbin") is None]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}; `make up` installs Debian's "
                         "prometheus and prometheus-node-exporter packages (apt-get)")


def prometheus_command(settings: Settings) -> list[str]:
    return [binary("prometheus"), f"--config.file={folder(settings) / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder(settings) / 'data'}",
            f"--web.listen-address={settings.platform_host}:{settings.prometheus_port}",
            "--storage.tsdb.retention.time=15d", "--web.enable-lifecycle"]


def node_exporter_command(settings: Settings) -> list[str]:
    settings.textfile_dir.mkdir(parents=True, exist_ok=True)
    return [binary("node-exporter"),
            f"--web.listen-address={settings.platform_host}:{settings.node_exporter_port}",
            f"--collector.textfile.directory={settings.textfile_dir}"]


def scrape_config(settings: Settings, controller: bool,
                  credentials: dict[str, tuple[str, Path]]) -> dict:
    """The whole prometheus.yml; ``credentials``: job -> (user, file holding the password)."""
    host, every = settings.platform_host, f"{settings.scrape_interval_s:g}s"
    prefect = settings.prefect_server_url.removeprefix("http://")
    jobs = [_static("prometheus", f"{host}:{settings.prometheus_port}"),
            _static("node", f"{host}:{settings.node_exporter_port}"),
            _static("mlflow", f"{host}:{settings.mlflow_port}", credentials.get("mlflow")),
            {**_static("prefect", prefect, credentials.get("prefect")),
             "metrics_path": "/api/metrics"},
            {"job_name": "serving", "file_sd_configs": [
                {"files": [str(targets_dir(settings) / "*.json")], "refresh_interval": every}]}]
    if controller:
        jobs.insert(2, _static("fairshare-controller", f"{host}:{settings.fairshare_port}"))
    return {"global": {"scrape_interval": every, "evaluation_interval": every,
                       "external_labels": {"platform": "mlops"}},
            "rule_files": [str(path) for path in sorted(RULES.glob("*.yml"))],
            "scrape_configs": jobs}


def _static(job: str, address: str, credentials: tuple[str, Path] | None = None) -> dict:
    config: dict = {"job_name": job, "static_configs": [{"targets": [address]}]}
    if credentials is not None:
        user, password_file = credentials
        config["basic_auth"] = {"username": user, "password_file": str(password_file)}
    return config


def write_config(settings: Settings, controller: bool, basic: dict[str, str]) -> Path:
    """Render prometheus.yml and each job's password file (0600); ``basic``: job ->
    ``user:password`` (a job whose secret has no user part is scraped without auth, and
    Prometheus shows it down with the server's 401). Returns the configuration's path."""
    root = folder(settings)
    root.mkdir(parents=True, exist_ok=True)
    targets_dir(settings).mkdir(parents=True, exist_ok=True)
    files = {}
    for job, pair in basic.items():
        if ":" not in pair:
            continue
        user, password = pair.split(":", 1)
        path = root / f"{job}.password"
        write_atomic(path, lambda tmp, password=password: (os.chmod(tmp, 0o600),
                                                          tmp.write_text(password)))
        files[job] = (user, path)
    path = root / "prometheus.yml"
    text = yaml.safe_dump(scrape_config(settings, controller, files), sort_keys=False)
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path


@dataclass(frozen=True)
class Target:
    job: str
    instance: str
    health: str
    error: str


def targets(url: str, timeout_s: float = 5.0) -> list[Target]:
    """Every active scrape target and its health, from Prometheus' HTTP API."""
    body = httpx.get(f"{url}/api/v1/targets", params={"state": "active"},
                     timeout=timeout_s).json()
    return [Target(t["labels"].get("job", ""), t["labels"].get("instance", ""), t["health"],
                   t.get("lastError", "")) for t in body["data"]["activeTargets"]]
