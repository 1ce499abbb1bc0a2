"""Data residency against moto's S3 server: one bucket in me-central-1, one in us-east-1, and
a platform policy of [me-central-1] in the teams file. Data in the us-east-1 bucket, or a
data root there, is refused before anything is read or written, naming the policy, the
location and its region; data in me-central-1 passes and its snapshot stays there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import pytest
import yaml

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import Settings
from mlops.governance.residency import ResidencyRefused
from mlops.pipeline.run_checks import check_run
from mlops.pipeline.stages import PipelineParams, run_stages, validate_stage
from tests.e2e.production_services import AWS, audited_tenant, moto_s3

pytestmark = pytest.mark.slow
UAE, US = "me-central-1", "us-east-1"
UAE_BUCKET, US_BUCKET = "uae-data", "us-data"
KEY = "vision/panel.csv"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server, its log, and a client; each bucket holds the same valid panel."""
    root = tmp_path_factory.mktemp("residency")
    generate_panel(n_entities=20, n_periods=5, seed=3).to_csv(root / "panel.csv", index=False)
    with moto_s3(root / "moto.log") as server:
        keys = {"aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"]}
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name=UAE, **keys)
        client.create_bucket(Bucket=UAE_BUCKET,
                             CreateBucketConfiguration={"LocationConstraint": UAE})
        boto3.client("s3", endpoint_url=server.endpoint, region_name=US,
                     **keys).create_bucket(Bucket=US_BUCKET)
        for bucket in (UAE_BUCKET, US_BUCKET):
            client.upload_file(str(root / "panel.csv"), bucket, KEY)
        yield {"endpoint": server.endpoint, "log": root / "moto.log", "client": client}


@pytest.fixture(scope="module")
def tenant() -> Iterator[dict[str, Any]]:
    with audited_tenant() as fields:
        yield fields


@pytest.fixture
def settings(s3: dict[str, Any], tenant: dict[str, Any], tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A production platform in me-central-1 whose data root is the me-central-1 bucket; the
    team may read both buckets' vision/ prefix, so residency alone decides."""
    for key, value in {**AWS, "AWS_DEFAULT_REGION": UAE}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSSPEC_S3", "{}")  # the stage's process-wide S3 settings, undone after
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump({"platform": {"residency": {"regions": [UAE]}}, "teams": [
        {"name": "vision", "data": {"roots": [f"s3://{UAE_BUCKET}/vision/",
                                              f"s3://{US_BUCKET}/vision/",
                                              "s3://no-such-bucket/"]}}]}))
    data = tmp_path / "data"
    return Settings(profile="production", data_dir=data, s3_endpoint_url=s3["endpoint"],
                    s3_bucket=UAE_BUCKET, s3_region=UAE, teams_file=teams,
                    tracking_uri=f"sqlite:///{data}/mlflow.db", **tenant)


def objects(s3: dict[str, Any]) -> dict[str, list[str]]:
    return {bucket: sorted(item["Key"] for item in s3["client"].list_objects_v2(
        Bucket=bucket).get("Contents", [])) for bucket in (UAE_BUCKET, US_BUCKET)}


def params(bucket: str) -> PipelineParams:
    spec = synthetic_spec(f"s3://{bucket}/{KEY}", name=bucket.replace("-", "_"))
    return PipelineParams(spec=spec, team="vision", deploy=False)


def test_data_in_us_east_1_is_refused_naming_policy_location_region_and_nothing_is_written(
        s3: dict[str, Any], settings: Settings) -> None:
    before = objects(s3)
    with pytest.raises(ResidencyRefused) as refused:
        run_stages(params(US_BUCKET), settings)
    assert str(refused.value) == (
        f"data residency: the dataset s3://{US_BUCKET}/{KEY} is in region {US}, outside the "
        f"residency policy (platform: {UAE}) that allows {UAE}; nothing was read or written")
    assert objects(s3) == before == {UAE_BUCKET: [KEY], US_BUCKET: [KEY]}
    requests = s3["log"].read_text()  # the server's request log: a read is a HEAD or GET
    assert f"GET /{US_BUCKET}/{KEY}" not in requests and f"HEAD /{US_BUCKET}/{KEY}" not in \
        requests, "the object was read"
    # No MLflow store, hence no model version; nothing under the data directory at all.
    assert not settings.data_dir.exists(), list(settings.data_dir.rglob("*"))


def test_the_validate_stage_alone_refuses_it_before_reading(
        s3: dict[str, Any], settings: Settings) -> None:
    """As a stage task calls it, without the team: the platform's policy still applies."""
    with pytest.raises(ResidencyRefused, match=f"the dataset s3://{US_BUCKET}/{KEY} is in "
                       f"region {US}, outside the residency policy \\(platform: {UAE}\\)"):
        validate_stage(params(US_BUCKET).spec, settings)
    assert objects(s3) == {UAE_BUCKET: [KEY], US_BUCKET: [KEY]}
    assert not settings.data_dir.exists()


def test_data_in_me_central_1_passes_and_its_snapshot_stays_there(
        s3: dict[str, Any], settings: Settings) -> None:
    run = params(UAE_BUCKET)
    check_run(run.spec, run.team, settings)
    lookups = s3["log"].read_text().count(f"GET /{UAE_BUCKET}?location")
    validated = validate_stage(run.spec, settings, team="vision")
    assert validated.rows == 100
    assert f"GET /{UAE_BUCKET}/{KEY}" in s3["log"].read_text()  # as a read shows in the log
    assert validated.snapshot_path.startswith(f"s3://{UAE_BUCKET}/datasets/uae_data/")
    written = objects(s3)
    assert written[US_BUCKET] == [KEY]
    assert [k for k in written[UAE_BUCKET] if k.startswith("datasets/")] == [
        validated.snapshot_path.removeprefix(f"s3://{UAE_BUCKET}/")]
    # A bucket's region is looked up once per process.
    assert lookups == 1 and s3["log"].read_text().count(f"GET /{UAE_BUCKET}?location") == 1


def test_a_data_root_in_us_east_1_is_refused_before_the_snapshot_is_written(
        s3: dict[str, Any], settings: Settings) -> None:
    us_root = settings.model_copy(update={"s3_bucket": US_BUCKET})
    before = objects(s3)
    with pytest.raises(ResidencyRefused, match=f"the data root s3://{US_BUCKET} is in region "
                       f"{US}, outside the residency policy \\(platform: {UAE}\\)"):
        validate_stage(params(UAE_BUCKET).spec, us_root, team="vision")
    assert objects(s3) == before


def test_a_bucket_whose_region_cannot_be_read_is_refused(settings: Settings) -> None:
    spec = synthetic_spec("s3://no-such-bucket/panel.csv", name="ghost")
    with pytest.raises(ResidencyRefused, match="the region of s3://no-such-bucket/panel.csv "
                       "cannot be read \\(GetBucketLocation on bucket no-such-bucket: "
                       "NoSuchBucket\\)"):
        validate_stage(spec, settings, team="vision")
