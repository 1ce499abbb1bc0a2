"""Real services for production-profile tests: moto's S3 server on loopback (an
S3-compatible endpoint, the one thing here that stands in for a cloud service) and, on the
machine's PostgreSQL, a role and databases of a test's own, dropped afterwards."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import free_port

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    """moto's S3 server on a loopback port: ``endpoint``, and ``stop`` for outage tests."""

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
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
        yield s3
    finally:
        s3.stop()


def private_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a certificate it signed for 127.0.0.1, made with openssl:
    (CA certificate, server certificate, server key)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.pem", "-days", "1", "-subj", "/CN=mlops test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.cnf")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


class RedisServer:
    """redis-server on a free port, persisting to its own folder (append-only file), so a
    restart comes back with the data it had; with ``password``, it requires AUTH."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder, self.port, self.password = folder, free_port(), password
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        auth = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--save", "", *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, password=self.password)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: redis writes its append-only file and exits
            self.process.wait(timeout=30)


@contextmanager
def postgres_tenant() -> Iterator[dict[str, str]]:
    """Settings for a role and database prefix of this test alone; dropped at the end."""
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
            for name in ("prefect", "mlflow", "mlflow_auth", "feast", "audit"):
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(f"{tenant['MLOPS_PG_DATABASE_PREFIX']}_{name}")))
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                sql.Identifier(tenant["MLOPS_PG_USER"])))
        admin.close()


@contextmanager
def audited_tenant() -> Iterator[dict[str, Any]]:
    """A tenant's PostgreSQL role with its audit table, as Settings keywords: what a stage
    on the production profile needs to record its facts, and nothing else of the profile."""
    from infra.production import ensure_postgres
    from mlops.config import Settings
    from mlops.governance.audit.postgres_store import ensure_audit_table

    with postgres_tenant() as tenant:
        fields = {key.removeprefix("MLOPS_").lower(): value for key, value in tenant.items()}
        ensure_postgres(Settings(**fields))
        ensure_audit_table(Settings(**fields))
        yield fields


@contextmanager
def production_profile(monkeypatch: Any, tenant: dict[str, str], data_dir: Path,
                       redis_url: str) -> Iterator[S3Server]:
    """This process's settings on the production profile: the tenant's PostgreSQL role and
    databases and the S3 bucket (on a moto server of its own), created now, and the given
    Redis. The S3 settings the stages install process-wide are undone after."""
    import fsspec

    from infra.production import ensure_bucket, ensure_postgres
    from mlops.config import Settings
    from mlops.governance.audit.postgres_store import ensure_audit_table

    with moto_s3(data_dir / "moto.log") as s3:
        env = {**AWS, **tenant, "MLOPS_PROFILE": "production", "MLOPS_DATA_DIR": str(data_dir),
               "MLOPS_REDIS_URL": redis_url, "MLOPS_S3_ENDPOINT_URL": s3.endpoint,
               "FSSPEC_S3": "{}"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setitem(fsspec.config.conf, "s3", {})
        ensure_postgres(Settings())
        ensure_audit_table(Settings())
        ensure_bucket(Settings())
        yield s3
