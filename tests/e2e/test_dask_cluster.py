"""The data stages on a team's own Dask cluster (``MLOPS_DASK_SCHEDULER``): a real scheduler
and worker started with Dask's CLI, as a team runs them, and the dataset in S3 (moto's
server). The worker knows nothing of the platform's settings but the AWS credentials every
worker of a team has: the object store's endpoint and encryption reach it from the stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import numpy as np
import pytest
from distributed import Client

from benchmarks.synthetic import generate_panel, synthetic_spec, write_partitioned_panel
from mlops.config import Settings
from mlops.data import storage
from mlops.partitioned.cluster import DaskUnavailable, cluster_client
from mlops.partitioned.scoring import describe_model, score_dataset
from mlops.pipeline.stages import validate_stage
from tests.conftest import free_port
from tests.e2e.production_services import AWS, audited_tenant, moto_s3
from tests.serving.onnx_models import write_model

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
BUCKET = "team-data"


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and one single-threaded worker on loopback; yields the address."""
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLOPS_", "FSSPEC_"))}
    env.update(AWS)
    commands = [[str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                 address.rsplit(":", 1)[1], "--no-dashboard"],
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--no-dashboard", "--memory-limit", "2GB"]]
    processes = []
    try:
        for index, command in enumerate(commands):
            with (logs / f"{index}.log").open("w") as log:
                processes.append(subprocess.Popen(command, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def tenant() -> Iterator[dict[str, Any]]:
    with audited_tenant() as fields:
        yield fields


@pytest.fixture
def team_s3(scheduler: str, tenant: dict[str, Any], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Settings]]:
    """An S3 server with an empty bucket (no default encryption: writes must ask for it),
    and production settings on it and on the team's scheduler."""
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    # The stage installs the S3 settings process-wide: undo that after the test.
    monkeypatch.setenv("FSSPEC_S3", "{}")
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    with moto_s3(tmp_path / "moto.log") as server:
        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield s3, Settings(profile="production", data_dir=tmp_path / "data",
                           dask_scheduler=scheduler, s3_endpoint_url=server.endpoint,
                           s3_bucket=BUCKET, **tenant)


def test_partitions_in_s3_are_validated_and_prepared_on_the_teams_cluster(
        scheduler: str, team_s3: tuple[Any, Settings], tmp_path: Path) -> None:
    s3, settings = team_s3
    write_partitioned_panel(tmp_path / "raw", rows=3_000, partition_rows=1_000, seed=2)
    for part in sorted((tmp_path / "raw").glob("part-*.parquet")):
        s3.upload_file(str(part), BUCKET, f"raw/{part.name}")
    spec = synthetic_spec(f"s3://{BUCKET}/raw/", name="team_panel")

    validated = validate_stage(spec, settings)

    assert validated.rows == 3_000
    assert validated.snapshot_path.startswith(f"s3://{BUCKET}/datasets/team_panel/")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    written = [key for key in keys if not key.startswith("raw/")]
    assert sum(key.endswith(".parquet") for key in written) == 3, keys
    assert not [key for key in keys if key.startswith("tmp/")], "scratch left behind"
    for key in written:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", (key, head)
    with Client(scheduler) as client:  # the work ran on the team's worker
        prefixes = client.run_on_scheduler(lambda dask_scheduler: list(
            dask_scheduler.task_prefixes))
    assert {"validate_one", "count_duplicates", "prepare_one"} <= set(prefixes), prefixes


def test_on_production_a_single_parquet_file_is_one_partition_on_the_cluster(
        team_s3: tuple[Any, Settings], tmp_path: Path) -> None:
    s3, settings = team_s3
    generate_panel(n_entities=50, n_periods=6, seed=1).to_parquet(tmp_path / "one.parquet")
    s3.upload_file(str(tmp_path / "one.parquet"), BUCKET, "raw/one.parquet")
    spec = synthetic_spec(f"s3://{BUCKET}/raw/one.parquet", name="one_file")

    validated = validate_stage(spec, settings)

    report = json.loads(Path(validated.report_path).read_text())
    assert (report["partitions"], report["rows"], report["success"]) == (1, 300, True)
    prepared = [item["Key"] for item in s3.list_objects_v2(
        Bucket=BUCKET, Prefix="datasets/one_file/")["Contents"]]
    assert sum(key.endswith("/one.parquet") for key in prepared) == 1, prepared


def test_an_unreachable_scheduler_is_named(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(DaskUnavailable, match=f"Dask scheduler at {address} is unreachable"):
        with cluster_client(Settings(data_dir=tmp_path, dask_scheduler=address)):
            pass
    assert time.monotonic() - started < 60


def test_batch_scores_of_partitions_in_s3_are_written_encrypted_by_the_teams_cluster(
        scheduler: str, team_s3: tuple[Any, Settings], tmp_path: Path) -> None:
    s3, settings = team_s3
    write_partitioned_panel(tmp_path / "raw", rows=2_000, partition_rows=1_000, seed=4)
    for part in sorted((tmp_path / "raw").glob("part-*.parquet")):
        s3.upload_file(str(part), BUCKET, f"score-in/{part.name}")
    path, sha = write_model(tmp_path / "model.onnx", features=[f"f{i}" for i in range(4)],
                            weights=np.array([0.5, -0.5, 1.0, 0.0]))
    data = path.read_bytes()
    model = describe_model(data, "alpha.panel", "7", sha)
    out = f"s3://{BUCKET}/scores/alpha.panel/v7/panel"
    storage.use_object_store(settings)
    with storage.object_store(settings, "scoring"), cluster_client(settings) as client:
        result = score_dataset(client, f"s3://{BUCKET}/score-in/", out, data, model,
                               "entity_id", "event_timestamp")
    assert (result.scored, result.rows) == (2, 2_000)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="scores/")[
        "Contents"]]
    assert sorted(key.rsplit("/", 1)[-1] for key in keys) == [
        "_SUCCESS.json", "part-00000.done.json", "part-00000.parquet",
        "part-00001.done.json", "part-00001.parquet"]
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", (key, head)
    with Client(scheduler) as client:  # the work ran on the team's worker
        prefixes = client.run_on_scheduler(lambda dask_scheduler: list(
            dask_scheduler.task_prefixes))
    assert "score_partition" in prefixes
