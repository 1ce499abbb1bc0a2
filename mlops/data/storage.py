"""Where the data stages keep their datasets, and how they read and write them.

On the local profile: files under the data directory. On the production profile: objects
under ``s3://<MLOPS_S3_BUCKET>/`` read and written through s3fs (any S3-compatible endpoint,
``MLOPS_S3_ENDPOINT_URL``), every write asking for server-side encryption. The S3 settings
are installed once per process as fsspec's defaults for ``s3://`` (``use_object_store``) and
exported as ``FSSPEC_S3`` for the processes it starts, such as a LocalCluster's Dask workers,
so every reader (pandas, pyarrow, Dask, Feast's offline store) gets them without plumbing.
Credentials come from the standard AWS chain only, never from these options.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.atomic_files import sha256_stream, write_atomic
from mlops.config import Settings

# botocore's own retries per request (standard mode: exponential backoff with jitter): a
# dead endpoint fails a request after these attempts, then the stage task's retries take over.
S3_ATTEMPTS = 4
S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 30
COMPLETE = "_COMPLETE"  # written last into a dataset folder: the folder is whole


class StorageUntrusted(RuntimeError):
    """The object store's TLS certificate is not trusted: a setting to fix, not retried."""


class StorageUnavailable(ConnectionError):
    """The object store did not answer after retries; the message names endpoint and object.
    A ConnectionError, so the stage tasks' retry policy retries it as transient."""


def s3_options(settings: Settings) -> dict[str, Any]:
    """s3fs's options for the settings' endpoint, region, CA bundle and encryption."""
    client: dict[str, Any] = {"region_name": settings.s3_region}
    if settings.s3_ca_bundle:
        client["verify"] = str(settings.s3_ca_bundle)
    options: dict[str, Any] = {
        "client_kwargs": client,
        "config_kwargs": {"retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"},
                          "connect_timeout": S3_CONNECT_TIMEOUT_S,
                          "read_timeout": S3_READ_TIMEOUT_S},
        "s3_additional_kwargs": settings.s3_write_args(),
    }
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    return options


def use_object_store(settings: Settings) -> None:
    """Make the settings' S3 options the defaults of every ``s3://`` access in this process
    and in the processes it starts; a no-op on the local profile."""
    if settings.profile != "production":
        return
    options = s3_options(settings)
    if fsspec.config.conf.get("s3") == options:
        return
    fsspec.config.conf["s3"] = options
    os.environ["FSSPEC_S3"] = json.dumps(options)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # instances made before keep their options


def data_root(settings: Settings) -> str:
    """The root of the platform's datasets: the bucket on production, else the data dir."""
    if settings.profile == "production":
        return f"s3://{settings.s3_bucket}"
    return str(settings.data_dir)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def endpoint_of(settings: Settings) -> str:
    return settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """What s3fs raises when the endpoint does not answer (after its retries)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return (BotoConnectionError, HTTPClientError, TimeoutError)


@contextmanager
def object_store(settings: Settings, what: str) -> Iterator[None]:
    """Work with the settings' object store (``use_object_store``); one that does not
    answer, after its retries, becomes one StorageUnavailable naming the endpoint and
    ``what`` was being done."""
    from botocore.exceptions import SSLError

    use_object_store(settings)
    try:
        yield
    except SSLError as exc:
        raise StorageUntrusted(
            f"object store {endpoint_of(settings)}: its TLS certificate is not trusted while "
            f"{what}; set MLOPS_S3_CA_BUNDLE to the CA that signed it: {exc}") from None
    except unavailable_errors() as exc:
        raise StorageUnavailable(
            f"object store {endpoint_of(settings)} did not answer while {what}, after "
            f"retries: {exc}") from None


def exists(path: str) -> bool:
    fs, stripped = fsspec.core.url_to_fs(path)
    return fs.exists(stripped)


def remove(path: str) -> None:
    """Delete a file or folder (recursively); absent is fine."""
    fs, stripped = fsspec.core.url_to_fs(path)
    if fs.exists(stripped):
        fs.rm(stripped, recursive=True)


def list_files(folder: str) -> list[str]:
    """The files directly in a folder (or under an S3 prefix) as full paths, sorted by
    name; none when it does not exist."""
    fs, stripped = fsspec.core.url_to_fs(folder)
    if not fs.exists(stripped):
        return []
    names = sorted(fs.ls(stripped, detail=False))
    return [join(folder, name.rstrip("/").rsplit("/", 1)[-1]) for name in names]


def sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, local or remote."""
    with fsspec.open(path, "rb") as handle:
        return sha256_stream(handle)


def is_folder(path: str) -> bool:
    """Whether ``path`` is a folder (or an S3 prefix) rather than a file."""
    fs, stripped = fsspec.core.url_to_fs(path)
    return fs.isdir(stripped)


def read_parquet(path: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file or folder of files, local or remote (through fsspec, so the object
    store's settings apply; pandas would hand s3:// URLs to pyarrow's own S3 client)."""
    fs, stripped = fsspec.core.url_to_fs(path)
    return pq.read_table(stripped, columns=columns, filesystem=fs).to_pandas()


def write_parquet(path: str, frame: pd.DataFrame | pa.Table,
                  dictionary: list[str] | None = None) -> None:
    """Write ``frame`` (pandas, or an arrow table as it is) so that no reader sees it
    half-written: a local temp file renamed, or one S3 PUT (an object appears whole or not
    at all). ``dictionary``: an arrow table's only dictionary-encoded columns (trying every
    column costs the time of the write again when few repeat)."""
    def write(target: Any) -> None:
        if isinstance(frame, pa.Table):
            pq.write_table(frame, target, use_dictionary=dictionary or True)
        else:
            frame.to_parquet(target, index=False)

    if not is_remote(path):
        write_atomic(Path(path), write)
        return
    fs, stripped = fsspec.core.url_to_fs(path)
    with fs.open(stripped, "wb") as handle:
        write(handle)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` so that no reader sees it half-written: a local temp file renamed, or
    one S3 object (a PUT, or a multipart upload that appears only when completed)."""
    if not is_remote(path):
        write_atomic(Path(path), lambda tmp: tmp.write_bytes(data))
        return
    fs, stripped = fsspec.core.url_to_fs(path)
    with fs.open(stripped, "wb") as handle:
        handle.write(data)


def read_bytes(path: str) -> bytes:
    """A file's bytes, local or remote; FileNotFoundError when there is none."""
    fs, stripped = fsspec.core.url_to_fs(path)
    with fs.open(stripped, "rb") as handle:
        return handle.read()


@contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """A local file with ``path``'s bytes, for libraries that read only local files: the
    file itself, or a temporary download of a remote one (removed afterwards)."""
    if not is_remote(path):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="mlops-copy-") as folder:
        local = Path(folder) / path.rstrip("/").rsplit("/", 1)[-1]
        local.write_bytes(read_bytes(path))
        yield local


def complete(folder: str) -> bool:
    """Whether a dataset folder was finished (its marker written last)."""
    return exists(join(folder, COMPLETE))


def write_folder(folder: str, write: Callable[[str], object]) -> None:
    """``write(folder)`` then the marker: a folder without it is rewritten, never read."""
    write(folder)
    fs, stripped = fsspec.core.url_to_fs(join(folder, COMPLETE))
    with fs.open(stripped, "wb") as handle:
        handle.write(b"")
