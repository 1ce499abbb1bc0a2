"""The object store's encryption settings against moto's S3 server: SSE-KMS with a key of
its KMS, and an https endpoint whose certificate a private CA signed (made by openssl
here), trusted through ``MLOPS_S3_CA_BUNDLE`` by both clients of the platform (boto3 in
``up``, s3fs in the data stages) and refused without it with a message that says what to
set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import fsspec
import pandas as pd
import pytest

from infra.production import ServiceUnreachable, ensure_bucket
from mlops.config import Settings
from mlops.data import storage
from tests.e2e.production_services import AWS, moto_s3, private_ca

pytestmark = pytest.mark.slow
BUCKET = "tls-bucket"


@pytest.fixture(autouse=True)
def platform_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSSPEC_S3", "{}")  # the stage's process-wide S3 settings, undone after
    monkeypatch.setitem(fsspec.config.conf, "s3", {})


def test_sse_kms_writes_name_the_key(tmp_path: Path) -> None:
    with moto_s3(tmp_path / "moto.log") as server:
        kms = boto3.client("kms", endpoint_url=server.endpoint, region_name="us-east-1")
        key_id = kms.create_key(Description="mlops test")["KeyMetadata"]["KeyId"]
        settings = Settings(profile="production", s3_endpoint_url=server.endpoint,
                            s3_bucket=BUCKET, s3_sse="aws:kms", s3_kms_key_id=key_id)
        ensure_bucket(settings)
        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
        rule = s3.get_bucket_encryption(Bucket=BUCKET)[
            "ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        assert rule == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}
        s3.delete_bucket_encryption(Bucket=BUCKET)  # so the write itself must ask for it
        with storage.object_store(settings, "writing with SSE-KMS"):
            storage.write_parquet(f"s3://{BUCKET}/kms/part-0.parquet",
                                  pd.DataFrame({"f0": [1.0]}))
        head = s3.head_object(Bucket=BUCKET, Key="kms/part-0.parquet")
        assert head["ServerSideEncryption"] == "aws:kms", head
        assert head["SSEKMSKeyId"].endswith(key_id), head


@pytest.fixture
def https_s3(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The endpoint and the CA certificate that signed its certificate."""
    ca, certificate, key = private_ca(tmp_path)
    with moto_s3(tmp_path / "moto.log", tls=(certificate, key)) as server:
        yield server.endpoint, ca


def test_a_ca_bundle_makes_a_private_https_endpoint_trusted(
        https_s3: tuple[str, Path]) -> None:
    endpoint, ca = https_s3
    settings = Settings(profile="production", s3_endpoint_url=endpoint, s3_ca_bundle=ca,
                        s3_bucket=BUCKET)
    assert f"s3: created bucket {BUCKET}" in ensure_bucket(settings)
    frame = pd.DataFrame({"entity_id": [1, 2], "f0": [0.5, 1.5]})
    path = f"s3://{BUCKET}/datasets/tls/part-0.parquet"
    with storage.object_store(settings, "writing over https"):
        storage.write_parquet(path, frame)
        pd.testing.assert_frame_equal(storage.read_parquet(path), frame)
    head = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        verify=str(ca)).head_object(Bucket=BUCKET, Key=path.split("/", 3)[3])
    assert head["ServerSideEncryption"] == "AES256"


def test_without_the_ca_bundle_the_endpoint_is_refused_saying_what_to_set(
        https_s3: tuple[str, Path]) -> None:
    endpoint, _ = https_s3
    settings = Settings(profile="production", s3_endpoint_url=endpoint, s3_bucket=BUCKET)
    with pytest.raises(ServiceUnreachable, match="certificate"):
        ensure_bucket(settings)
    with pytest.raises(storage.StorageUntrusted) as raised:
        with storage.object_store(settings, "listing the datasets"):
            storage.is_folder(f"s3://{BUCKET}/datasets/")
    message = str(raised.value)
    assert f"object store {endpoint}" in message and "MLOPS_S3_CA_BUNDLE" in message, message
