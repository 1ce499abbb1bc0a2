"""The production profile's services for the chaos benchmark, each one the run's own: a
role and databases on the machine's PostgreSQL, a redis-server with append-only
persistence in the run's folder (a restart keeps its data), and an S3-compatible store
(moto's server, standing in for the cloud's S3) behind a fault proxy, so the object store
can be taken away for a window without losing what moto holds in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.fault_proxy import FaultProxy, fault_proxy
from benchmarks.production_services import AWS, RedisServer, moto_s3, postgres_tenant
from infra.credentials import SERVER_AUTH, SESSION_KEY, identity_variables, mlflow_variables
from mlops.governance.identities import load_governance

BUCKET = "mlops-chaos"


@dataclass
class Services:
    """The running services, and the settings (``MLOPS_*``, ``AWS_*``) that point at them:
    the platform reaches S3 only through ``proxy``."""

    env: dict[str, str]
    redis: RedisServer
    proxy: FaultProxy


@contextmanager
def production_services(root: Path) -> Iterator[Services]:
    """The services under ``root``, stopped (and the PostgreSQL tenant dropped) at the end."""
    redis = RedisServer(root / "redis")
    with postgres_tenant() as tenant, moto_s3(root / "moto.log") as s3, \
            fault_proxy(urlsplit(s3.endpoint).port or 0) as proxy:
        redis.start()
        try:
            yield Services({**AWS, **tenant, "MLOPS_PROFILE": "production",
                            "MLOPS_S3_ENDPOINT_URL": proxy.endpoint, "MLOPS_S3_BUCKET": BUCKET,
                            "MLOPS_REDIS_URL": redis.url}, redis, proxy)
        finally:
            redis.stop()


def production_secrets(teams_file: Path) -> dict[str, str]:
    """What a secret store hands `make up` on the production profile (which generates none):
    the server's auth string, the gateway's key, each identity's and MLflow's secrets."""
    governance = load_governance(teams_file)
    names = (SERVER_AUTH, SESSION_KEY, *identity_variables(governance),
             *mlflow_variables(governance))
    return {name: secrets.token_urlsafe(24) for name in names}
