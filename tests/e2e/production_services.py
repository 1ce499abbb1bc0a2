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
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_s3(log: Path) -> Iterator[str]:
    """An S3-compatible server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    with log.open("w") as out:
        process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(endpoint, timeout=1.0)
                break
            except httpx.HTTPError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def postgres_tenant() -> Iterator[dict[str, str]]:
    """Settings for a role and database prefix of this test alone; dropped at the end."""
    import psycopg2
    from psycopg2 import sql

    suffix = secrets.token_hex(4)
    tenant = {"MLOPS_PG_USER": f"mlops_t{suffix}", "MLOPS_PG_PASSWORD": secrets.token_hex(12),
              "MLOPS_PG_DATABASE_PREFIX": f"mlops_t{suffix}"}
    try:
        yield tenant
    finally:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                                 dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            for name in ("prefect", "mlflow", "feast"):
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(f"{tenant['MLOPS_PG_DATABASE_PREFIX']}_{name}")))
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                sql.Identifier(tenant["MLOPS_PG_USER"])))
        admin.close()


def use_production_profile(monkeypatch: Any, tenant: dict[str, str], data_dir: Path,
                           redis_url: str) -> None:
    """Point this process's settings at the production profile (the tenant's PostgreSQL
    role and databases, created now, and the given Redis)."""
    from infra.production import ensure_postgres
    from mlops.config import Settings

    env = {**tenant, "MLOPS_PROFILE": "production", "MLOPS_DATA_DIR": str(data_dir),
           "MLOPS_REDIS_URL": redis_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ensure_postgres(Settings())
