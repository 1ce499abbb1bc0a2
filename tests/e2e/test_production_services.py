"""`make up PROFILE=production` on real services: the machine's PostgreSQL and Redis, and an
S3-compatible endpoint (moto's server on loopback). The role, databases and bucket are
created once and found on the next `up`; the Prefect server keeps its state in PostgreSQL;
MLflow keeps runs in PostgreSQL and artifacts in S3, encrypted at rest; an unreachable
PostgreSQL stops `up` with its URL named and its password hidden."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import free_port
from tests.e2e.production_services import AWS, moto_s3, postgres_tenant
from tests.e2e.stack import run_module, running_stack

pytestmark = pytest.mark.slow
BUCKET = "mlops-test"


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("production")
    with moto_s3(root / "moto.log") as endpoint, postgres_tenant() as tenant:
        extra = {**AWS, **tenant, "MLOPS_PROFILE": "production",
                 "MLOPS_S3_ENDPOINT_URL": endpoint, "MLOPS_S3_BUCKET": BUCKET}
        with running_stack(root, **extra) as stack:
            yield {**stack, "endpoint": endpoint, "tenant": tenant}


def _query(tenant: dict[str, str], database: str, statement: str, *args: object) -> list:
    """Rows of a query, connected as the platform's own role (not the admin)."""
    with psycopg2.connect(host="127.0.0.1", port=5432, user=tenant["MLOPS_PG_USER"],
                          password=tenant["MLOPS_PG_PASSWORD"],
                          dbname=f"{tenant['MLOPS_PG_DATABASE_PREFIX']}_{database}") as conn:
        with conn.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall()


def _s3(endpoint: str):  # noqa: ANN202 - a boto3 client
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_up_prepares_the_services_once_and_prefect_keeps_its_state_in_postgresql(
        production: dict) -> None:
    tenant, out = production["tenant"], production["up"]
    prefix = tenant["MLOPS_PG_DATABASE_PREFIX"]
    for line in (f"postgres: role {tenant['MLOPS_PG_USER']} created",
                 f"postgres: created database {prefix}_prefect",
                 f"postgres: created database {prefix}_mlflow",
                 f"postgres: created database {prefix}_feast",
                 f"s3: created bucket {BUCKET}", f"s3: default encryption AES256 on {BUCKET}",
                 "redis: redis://127.0.0.1:6379/0 answers"):
        assert line in out, out
    # The pools provisioned through the Prefect API are rows of its PostgreSQL database.
    pools = {name for (name,) in _query(tenant, "prefect", "SELECT name FROM work_pool")}
    assert {"gpu", "cpu"} <= pools, pools
    encryption = _s3(production["endpoint"]).get_bucket_encryption(Bucket=BUCKET)
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    again = run_module("infra.services", "up", env=production["env"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"postgres: database {prefix}_prefect exists" in again.stdout
    assert f"s3: bucket {BUCKET} exists" in again.stdout
    assert again.stdout.count("already running") == 5, again.stdout
    assert tenant["MLOPS_PG_PASSWORD"] not in out + again.stdout + again.stderr


def test_mlflow_keeps_runs_in_postgresql_and_artifacts_encrypted_in_s3(
        production: dict, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    url = f"http://127.0.0.1:{production['env']['MLOPS_MLFLOW_PORT']}"
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.create_experiment("production-check")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "auc", 0.75)
    report = tmp_path / "report.txt"
    report.write_text("lineage")
    client.log_artifact(run.info.run_id, str(report))
    rows = _query(production["tenant"], "mlflow", "SELECT key, value FROM metrics "
                  "WHERE run_uuid = %s", run.info.run_id)
    assert rows == [("auc", 0.75)]
    s3 = _s3(production["endpoint"])
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    stored = [key for key in keys if key.startswith("mlflow/") and key.endswith("report.txt")]
    assert len(stored) == 1 and run.info.run_id in stored[0], keys
    head = s3.head_object(Bucket=BUCKET, Key=stored[0])
    assert head["ServerSideEncryption"] == "AES256", head
    body = s3.get_object(Bucket=BUCKET, Key=stored[0])["Body"].read()
    assert body == b"lineage"


def test_an_unreachable_postgresql_stops_up_naming_it_without_the_password(
        tmp_path: Path) -> None:
    env = {**os.environ, **AWS, "MLOPS_PROFILE": "production", "MLOPS_DATA_DIR": str(tmp_path),
           "MLOPS_PG_PORT": "1", "MLOPS_PG_ADMIN_PASSWORD": "admin-secret-value",
           "MLOPS_PREFECT_PORT": str(free_port()), "MLOPS_MLFLOW_PORT": str(free_port())}
    env.pop("PREFECT_API_URL", None)
    result = run_module("infra.services", "up", env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "PostgreSQL at postgresql://postgres:***@127.0.0.1:1/postgres is unreachable" \
        in output, output
    assert "admin-secret-value" not in output
    assert not list((tmp_path / "platform").glob("*.pid")), "something was started"
