"""`make up PROFILE=production` on real services: the machine's PostgreSQL and Redis, and an
S3-compatible endpoint (moto's server on loopback). The role, databases and bucket are
created once and found on the next `up`; the Prefect server keeps its state in PostgreSQL;
MLflow keeps runs in PostgreSQL and artifacts in S3, encrypted at rest; an unreachable
PostgreSQL stops `up` with its URL named and its password hidden."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
import redis
import yaml

from benchmarks.synthetic import synthetic_spec, write_partitioned_panel
from mlops.config import Settings
from mlops.data.snapshot import ValidatedData
from mlops.features.online import online_lookup
from mlops.features.training_set import FeatureSetResult
from mlops.pipeline.stages import PipelineParams, register_stage
from mlops.registry import RegistryError, model_name
from mlops.training.export import ExportResult
from mlops.training.train import TrainResult
from tasks.retries import RETRIES
from tests.conftest import free_port
from tests.e2e.production_services import AWS, moto_s3, postgres_tenant
from tests.e2e.stack import child_runs, run_module, running_stack, wait_final

pytestmark = pytest.mark.slow
BUCKET = "mlops-test"
EXTERNAL_PROMETHEUS = f"http://127.0.0.1:{free_port()}"
REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of the tests' own, flushed after


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("production")
    with moto_s3(root / "moto.log") as s3, postgres_tenant() as tenant:
        extra = {**AWS, **tenant, "MLOPS_PROFILE": "production",
                 "MLOPS_S3_ENDPOINT_URL": s3.endpoint, "MLOPS_S3_BUCKET": BUCKET,
                 "MLOPS_REDIS_URL": REDIS_URL, "PREFECT_WORKER_QUERY_SECONDS": "2",
                 # The team's own Prometheus (not reachable here): `up` starts none.
                 "MLOPS_PROMETHEUS_URL": EXTERNAL_PROMETHEUS}
        try:
            with running_stack(root, **extra) as stack:
                yield {**stack, "endpoint": s3.endpoint, "s3_server": s3, "tenant": tenant}
        finally:
            redis.Redis.from_url(REDIS_URL).flushdb()


def _query(tenant: dict[str, str], database: str, statement: str, *args: object) -> list:
    """Rows of a query, connected as the platform's own role (not the admin)."""
    with psycopg2.connect(host="127.0.0.1", port=5432, user=tenant["MLOPS_PG_USER"],
                          password=tenant["MLOPS_PG_PASSWORD"],
                          dbname=f"{tenant['MLOPS_PG_DATABASE_PREFIX']}_{database}") as conn:
        with conn.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall()


def _s3(endpoint: str) -> Any:  # a boto3 S3 client
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
                 f"postgres: created database {prefix}_mlflow_auth",
                 f"postgres: created database {prefix}_feast",
                 f"s3: created bucket {BUCKET}", f"s3: default encryption AES256 on {BUCKET}",
                 f"redis: {REDIS_URL} answers"):
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
    assert again.stdout.count("already running") == 6, again.stdout  # the gateway too
    # An external Prometheus: neither it nor a node exporter is started here, and its
    # operator gets the scrape configuration to include.
    assert f"Prometheus: {EXTERNAL_PROMETHEUS}" in again.stdout
    assert "node-exporter" not in again.stdout and "prometheus:" not in again.stdout
    config = Path(production["env"]["MLOPS_DATA_DIR"]) / "platform/prometheus/prometheus.yml"
    jobs = [job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]]
    assert {"mlflow", "prefect", "serving", "fairshare-controller"} <= set(jobs), jobs
    assert tenant["MLOPS_PG_PASSWORD"] not in out + again.stdout + again.stderr


def test_no_password_or_token_is_on_a_command_line(production: dict) -> None:
    """What `ps` shows every local user: the command lines of all processes (the servers,
    their workers, the gateway, the Prefect workers, the controller)."""
    values = [*production["secrets"].values(), production["tenant"]["MLOPS_PG_PASSWORD"]]
    assert len(values) > 10
    lines = []
    for entry in Path("/proc").iterdir():
        try:
            lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, UnicodeDecodeError):
            continue  # a process that ended meanwhile, or not ours to read
    assert any("--app-name basic-auth" in line for line in lines), "no MLflow server found"
    leaks = [line[:120] for line in lines for value in values if value in line]
    assert leaks == []


def test_mlflow_keeps_runs_in_postgresql_and_artifacts_encrypted_in_s3(
        production: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    # Basic-auth: as team default's MLflow user (without one the server answers 401).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "team-default")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD",
                       production["secrets"]["MLOPS_MLFLOW_PASSWORD_DEFAULT"])
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


# The two tests below use the stack's S3 for a whole pipeline run, then stop it: keep them
# last, in this order.
PARENT = "training-pipeline-distributed/default"
PANEL = "prod_panel"
MODEL = model_name("default", PANEL)  # the deployment's team is default


def _trigger(production: dict, spec: dict, key: str) -> str:
    client = production["client"]
    deployment = client.get(f"/deployments/name/{PARENT}")
    body = {"parameters": {"params": {"spec": spec, "model": {"epochs": 3}, "deploy": False}},
            "idempotency_key": key}
    run = client.post(f"/deployments/{deployment['id']}/create_flow_run", body)
    assert run.status_code == 201, run.text
    return run.json()["id"]


def test_the_pipeline_runs_on_postgresql_redis_s3_and_dask(
        production: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env, s3 = production["env"], _s3(production["endpoint"])
    deployed = run_module("infra.flow_deployments",
                          env={**env, "PREFECT_API_URL": production["api"]})
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    # Without the bucket's default, an object is encrypted only if its write asked for it.
    s3.delete_bucket_encryption(Bucket=BUCKET)
    write_partitioned_panel(tmp_path / "raw", rows=8_000, partition_rows=2_000, seed=3)
    for part in sorted((tmp_path / "raw").glob("part-*.parquet")):
        s3.upload_file(str(part), BUCKET, f"datasets-in/default/{PANEL}/{part.name}")
    spec = synthetic_spec(f"s3://{BUCKET}/datasets-in/default/{PANEL}/", name=PANEL)

    run_id = _trigger(production, spec.model_dump(mode="json"), PANEL)
    run = wait_final(production["client"], run_id, timeout_s=540)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    # The stages handed over through the bucket, not the data directory.
    assert not (Path(env["MLOPS_DATA_DIR"]) / "handover" / run_id).exists()
    validated, features, registered = (_handover(s3, run_id, stage)
                                       for stage in ("validate", "features", "register"))
    # Validation ran per partition on Dask; the snapshot and Feast's offline data are in S3.
    report = json.loads(Path(validated["report_path"]).read_text())
    assert (report["partitions"], report["rows"], report["success"]) == (4, 8_000, True)
    assert validated["snapshot_path"].startswith(f"s3://{BUCKET}/datasets/{PANEL}/")
    assert features["training_path"] == f"s3://{BUCKET}/features/{PANEL}/training.parquet"
    written = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]
               if not item["Key"].startswith("datasets-in/")]
    assert sum(k.startswith(f"datasets/{PANEL}/") and k.endswith(".parquet")
               for k in written) == 4, written
    assert f"features/{PANEL}/source.parquet" in written
    models = [k for k in written if k.startswith("mlflow/") and k.endswith("model.onnx")]
    assert len(models) == 1, written
    for key in written:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", (key, head)
    # The registry is MLflow's PostgreSQL database; Feast's registry is its own.
    tenant = production["tenant"]
    assert registered["name"] == MODEL
    versions = _query(tenant, "mlflow", "SELECT version FROM model_versions WHERE name = %s",
                      MODEL)
    assert versions == [(int(registered["version"]),)]
    aliases = _query(tenant, "mlflow", "SELECT alias FROM registered_model_aliases "
                     "WHERE name = %s", MODEL)
    assert sorted(a for (a,) in aliases) == ["challenger", "champion"]
    views = _query(tenant, "feast", "SELECT feature_view_name FROM feature_views "
                   "WHERE project_id = %s", PANEL)
    assert views == [(f"{PANEL}_features",)]
    # The online store is Redis: the latest values of an entity, as served by entity.
    frame = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "raw").glob("*.parquet")))
    latest = frame.sort_values("event_timestamp").groupby("entity_id").last()
    entity = int(latest.index[7])
    lookup = online_lookup(spec, tmp_path / "reader", _as_platform(monkeypatch, env))
    np.testing.assert_allclose(lookup.matrix([entity])[0],
                               latest.loc[entity, spec.features].to_numpy("float64"), rtol=1e-6)


def _handover(s3: Any, run_id: str, stage: str) -> dict:
    """A stage's result as the pipeline handed it over, in the bucket."""
    body = s3.get_object(Bucket=BUCKET, Key=f"handover/{run_id}/{stage}.json")["Body"]
    return json.loads(body.read())


def _as_platform(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """This process's settings as the platform's (its MLOPS_* and AWS_* variables)."""
    for key, value in env.items():
        if key.startswith(("MLOPS_", "AWS_")):
            monkeypatch.setenv(key, value)
    return Settings()


def test_an_object_store_outage_is_retried_then_fails_clearly_with_nothing_registered(
        production: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """S3 stops answering: a run's data stage retries, then fails naming the endpoint; a
    registration in flight leaves no model version behind."""
    env = production["env"]
    runs = production["client"].post("/flow_runs/filter", {}).json()
    done = next(r for r in runs if r["idempotency_key"] == PANEL)
    s3 = _s3(production["endpoint"])
    stage = {name: _handover(s3, done["id"], name)
             for name in ("validate", "features", "train", "export")}
    # The registering worker holds the exported file (it exported it): the outage then
    # hits MLflow's upload of the model, not the reading of the export.
    onnx = tmp_path / "model.onnx"
    s3.download_file(BUCKET, stage["export"]["onnx_path"].removeprefix(f"s3://{BUCKET}/"),
                     str(onnx))
    stage["export"]["onnx_path"] = str(onnx)
    production["s3_server"].stop()

    # A run: its validation task is retried (transient), then the run fails saying why.
    spec = synthetic_spec(f"s3://{BUCKET}/datasets-in/default/{PANEL}/", name=PANEL)
    run_id = _trigger(production, spec.model_dump(mode="json"), f"{PANEL}-outage")
    run = wait_final(production["client"], run_id, timeout_s=300)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"] or ""
    assert f"object store {production['endpoint']} did not answer while validating" in message
    validate = child_runs(production["client"], run_id)["validate-stage"]
    tasks = production["client"].post("/task_runs/filter", {"task_runs": {
        "flow_run_id": {"any_": [validate["id"]]}}}).json()
    attempts = {t["name"].rsplit("-", 1)[0]: t["run_count"] for t in tasks}
    assert attempts == {"validate-data": RETRIES + 1}, attempts

    # A registration whose model upload fails: a clear error, the run marked failed, and no
    # version, alias or registered model added.
    settings = _as_platform(monkeypatch, env)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    params = PipelineParams(spec=spec)
    with pytest.raises(RegistryError, match="no version was registered"):
        register_stage(params, ValidatedData(**stage["validate"]),
                       FeatureSetResult(**stage["features"]), TrainResult(**stage["train"]),
                       ExportResult(**stage["export"]), settings)
    tenant = production["tenant"]
    assert _query(tenant, "mlflow", "SELECT count(*) FROM model_versions "
                  "WHERE name = %s", MODEL) == [(1,)]
    statuses = _query(tenant, "mlflow", "SELECT status FROM runs ORDER BY start_time DESC "
                      "LIMIT 1")
    assert statuses == [("FAILED",)]
