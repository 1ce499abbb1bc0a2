"""Where the data stages keep datasets: local files on the local profile, S3 settings for
s3fs on the production profile, and an object store that does not answer named clearly."""

from __future__ import annotations

import time
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from mlops.atomic_files import sha256_file
from mlops.config import Settings
from mlops.data import storage
from tasks.retries import TRANSIENT


def test_local_profile_keeps_datasets_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    root = storage.data_root(settings)
    assert root == str(tmp_path)
    path = storage.join(root, "datasets", "panel", "abc.parquet")
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.25, 0.125]})
    storage.write_parquet(path, frame)
    assert storage.exists(path) and not storage.is_folder(path)
    assert storage.is_folder(str(Path(path).parent))
    assert [p.name for p in Path(path).parent.iterdir()] == ["abc.parquet"]  # no temp left
    pd.testing.assert_frame_equal(storage.read_parquet(path), frame)
    assert storage.sha256(path) == sha256_file(path)
    storage.remove(str(tmp_path / "datasets"))
    assert not storage.exists(path)
    storage.remove(str(tmp_path / "datasets"))  # absent is fine


def test_a_folder_is_complete_only_once_its_marker_is_written(tmp_path: Path) -> None:
    folder = str(tmp_path / "snapshot")

    def fail(target: str) -> None:
        Path(target).mkdir()
        (Path(target) / "part-0.parquet").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        storage.write_folder(folder, fail)
    assert not storage.complete(folder)
    storage.write_folder(folder, lambda target: Path(target).mkdir(exist_ok=True))
    assert storage.complete(folder)


def test_s3_options_carry_endpoint_region_ca_and_encryption(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    settings = Settings(profile="production", s3_endpoint_url="https://s3.internal:9000",
                        s3_region="eu-west-1", s3_sse="aws:kms", s3_kms_key_id="key-1",
                        s3_ca_bundle=bundle)
    options = storage.s3_options(settings)
    assert options["endpoint_url"] == "https://s3.internal:9000"
    assert options["client_kwargs"] == {"region_name": "eu-west-1", "verify": str(bundle)}
    assert options["s3_additional_kwargs"] == {"ServerSideEncryption": "aws:kms",
                                               "SSEKMSKeyId": "key-1"}
    assert "key" not in options and "secret" not in options  # credentials: the AWS chain
    assert storage.data_root(settings) == "s3://mlops"


def test_the_local_profile_leaves_fsspec_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fsspec.config.conf, "s3", {"sentinel": True})
    storage.use_object_store(Settings())
    assert fsspec.config.conf["s3"] == {"sentinel": True}


def test_an_object_store_that_does_not_answer_is_named_and_retried_as_transient(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("FSSPEC_S3", "{}")  # restored after the test, like fsspec's config
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    settings = Settings(profile="production", s3_endpoint_url="http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(storage.StorageUnavailable) as raised:
        with storage.object_store(settings, "reading s3://mlops/raw/"):
            storage.read_parquet("s3://mlops/raw/part-0.parquet")
    message = str(raised.value)
    assert message.startswith("object store http://127.0.0.1:9 did not answer while reading "
                              "s3://mlops/raw/, after retries"), message
    assert isinstance(raised.value, TRANSIENT)  # the stage tasks retry it
    assert time.monotonic() - started < 60


def test_a_partition_the_object_store_cannot_serve_is_an_outage_not_a_corrupt_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.data.loading import DataError
    from mlops.partitioned.validation import read_partition

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("FSSPEC_S3", "{}")
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    storage.use_object_store(Settings(profile="production",
                                      s3_endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(storage.unavailable_errors()) as raised:
        read_partition("s3://mlops/raw/part-00000.parquet")
    assert not isinstance(raised.value, DataError)
