"""The production profile's services, made ready idempotently by `make up PROFILE=production`.

- PostgreSQL: the platform's role (``MLOPS_PG_USER``) and its databases
  ``<prefix>_prefect``, ``<prefix>_mlflow``, ``<prefix>_mlflow_auth`` (MLflow's basic-auth
  users and permissions, apart from the runs) and ``<prefix>_feast``, created through the
  admin account when missing, left alone when present.
- S3 (or any S3-compatible store): the bucket, created when missing, with default
  server-side encryption set; every write of the platform also asks for it
  (``Settings.s3_write_args``), so objects are encrypted even where a bucket default is not
  honoured.
- Redis: answered a PING.

A service that cannot be reached stops `up` with one line that names it by URL, never with
its password.
"""

from __future__ import annotations

import json
from typing import Any

from mlops.config import Settings

DATABASES = ("prefect", "mlflow", "mlflow_auth", "feast")


class ServiceUnreachable(RuntimeError):
    """A production service did not answer; the message names it without secrets."""


def prepare(settings: Settings) -> list[str]:
    """Make every production service ready; one line per thing checked or created."""
    from mlops.governance.audit.postgres_store import ensure_audit_table

    return [*ensure_postgres(settings), *ensure_audit_table(settings), *ensure_bucket(settings),
            check_redis(settings)]


def ensure_postgres(settings: Settings) -> list[str]:
    import psycopg2
    from psycopg2 import sql

    where = settings.database_url("postgres", admin=True, redact=True)
    try:
        admin = psycopg2.connect(settings.database_url("postgres", admin=True),
                                 connect_timeout=5)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ServiceUnreachable(f"PostgreSQL at {where} is unreachable: {reason}") from None
    admin.autocommit = True  # CREATE DATABASE cannot run in a transaction
    lines = []
    try:
        with admin.cursor() as cursor:
            lines.append(_ensure_role(cursor, sql, settings))
            for name in DATABASES:
                database = f"{settings.pg_database_prefix}_{name}"
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone():
                    lines.append(f"postgres: database {database} exists")
                    continue
                cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(settings.pg_user)))
                lines.append(f"postgres: created database {database}")
    finally:
        admin.close()
    return lines


def _ensure_role(cursor: Any, sql: Any, settings: Settings) -> str:
    """The platform's login role; its password follows the setting on every `up`."""
    password = settings.pg_password.get_secret_value() if settings.pg_password else None
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (settings.pg_user,))
    exists = cursor.fetchone() is not None
    verb = "ALTER" if exists else "CREATE"
    statement = sql.SQL(verb + " ROLE {} LOGIN").format(sql.Identifier(settings.pg_user))
    if password is not None:
        statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(password))
    cursor.execute(statement)
    return f"postgres: role {settings.pg_user} {'exists' if exists else 'created'}"


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url,
                        region_name=settings.s3_region,
                        verify=str(settings.s3_ca_bundle) if settings.s3_ca_bundle else None,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                      connect_timeout=5, read_timeout=30))


def ensure_bucket(settings: Settings) -> list[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    client, bucket = s3_client(settings), settings.s3_bucket
    where = f"S3 bucket {bucket} at {settings.s3_endpoint_url or 'AWS'}"
    try:
        client.head_bucket(Bucket=bucket)
        line = f"s3: bucket {bucket} exists"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise ServiceUnreachable(f"{where}: {exc}") from None
        create: dict[str, Any] = {"Bucket": bucket}
        if settings.s3_region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": settings.s3_region}
        client.create_bucket(**create)
        line = f"s3: created bucket {bucket}"
    except BotoCoreError as exc:
        raise ServiceUnreachable(f"{where} is unreachable: {exc}") from None
    rule = {"SSEAlgorithm": settings.s3_sse}
    if settings.s3_sse == "aws:kms" and settings.s3_kms_key_id:
        rule["KMSMasterKeyID"] = settings.s3_kms_key_id
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": rule}]})
    return [line, f"s3: default encryption {settings.s3_sse} on {bucket}"]


def check_redis(settings: Settings) -> str:
    import redis

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(settings.redis_url, password=password, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnreachable(f"Redis at {_redact(settings.redis_url)} is unreachable: "
                                 f"{exc}") from None
    finally:
        client.close()
    return f"redis: {_redact(settings.redis_url)} answers"


def _redact(url: str) -> str:
    """A URL without the password of its user part."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def server_environment(settings: Settings) -> dict[str, dict[str, str]]:
    """Per platform server, what it needs to run on the production services."""
    s3 = {"MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
          "MLFLOW_S3_UPLOAD_EXTRA_ARGS": json.dumps(settings.s3_write_args()),
          "AWS_DEFAULT_REGION": settings.s3_region}
    if settings.s3_ca_bundle:
        s3["AWS_CA_BUNDLE"] = str(settings.s3_ca_bundle)
    return {"prefect-server": {"PREFECT_SERVER_DATABASE_CONNECTION_URL":
                               settings.database_url("prefect", "postgresql+asyncpg")},
            "mlflow-server": {key: value for key, value in s3.items() if value}}

