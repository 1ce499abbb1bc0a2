"""Real services for the production profile on one machine, for benchmarks and tests: moto's
S3 server on loopback (an S3-compatible endpoint, the one thing here that stands in for a
cloud service), a private redis-server, and, on the machine's PostgreSQL (127.0.0.1:5432,
trust auth for ``postgres``), a role and databases of the caller's own, dropped afterwards.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from benchmarks.servers import free_port

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
TENANT_DATABASES = ("prefect", "mlflow", "mlflow_auth", "feast", "audit")


@dataclass
class S3Server:
    """moto's S3 server on a loopback port: ``endpoint``, and ``stop`` for outage tests (moto
    keeps its data in memory: a stopped server's objects are gone)."""

    endpoint: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def moto_s3(log: Path, tls: tuple[Path, Path] | None = None) -> Iterator[S3Server]:
    """An S3-compatible server on a free loopback port, stopped at the end; with ``tls``
    (certificate, key), on https."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    options = ["-c", str(tls[0]), "-k", str(tls[1])] if tls else []
    with log.open("w") as out:
        process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port), *options],
                                   stdout=out, stderr=subprocess.STDOUT)
    s3 = S3Server(f"{'https' if tls else 'http'}://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(s3.endpoint, timeout=1.0, verify=False)
                break
            except httpx.HTTPError:
                if process.poll() is not None:
                    raise RuntimeError(f"moto_server exited: {log.read_text()}") from None
                time.sleep(0.2)
        yield s3
    finally:
        s3.stop()


class RedisServer:
    """redis-server on a free port, persisting to its own folder (append-only file), so a
    restart (``stop`` then ``start``: same port, same folder) comes back with the data it
    had; with ``password``, it requires AUTH."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder, self.port, self.password = folder, free_port(), password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        auth = ["--requirepass", self.password] if self.password else []
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--save", "", *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, password=self.password)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:  # also while it loads its append-only file
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: redis writes its append-only file and exits
            self.process.wait(timeout=30)


@contextmanager
def postgres_tenant() -> Iterator[dict[str, str]]:
    """Settings for a role and database prefix of the caller's alone; dropped at the end."""
    import psycopg2
    from psycopg2 import sql

    suffix = secrets.token_hex(4)
    tenant = {"MLOPS_PG_USER": f"mlops_t{suffix}", "MLOPS_PG_PASSWORD": secrets.token_hex(12),
              "MLOPS_PG_DATABASE_PREFIX": f"mlops_t{suffix}",
              "MLOPS_AUDIT_KEY": secrets.token_hex(32)}
    try:
        yield tenant
    finally:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                                 dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            for name in TENANT_DATABASES:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(f"{tenant['MLOPS_PG_DATABASE_PREFIX']}_{name}")))
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                sql.Identifier(tenant["MLOPS_PG_USER"])))
        admin.close()
