"""Real services for production-profile tests: moto's S3 server on loopback (an
S3-compatible endpoint, the one thing here that stands in for a cloud service), a private
Redis and, on the machine's PostgreSQL, a role and databases of a test's own, dropped
afterwards. The services themselves are ``benchmarks.production_services`` (the chaos
benchmark runs on them too); this module adds what only tests use."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.production_services import (  # noqa: F401 (re-exported)
    AWS,
    RedisServer,
    S3Server,
    moto_s3,
    postgres_tenant,
)


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
