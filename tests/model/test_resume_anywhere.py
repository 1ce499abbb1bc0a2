"""Resume anywhere: a real training run that gets SIGTERM saves a checkpoint and exits within
its grace period; a retry on another worker resumes from that checkpoint and ends with the
model an uninterrupted run makes (same seed, same data). Locally the workers share only the
checkpoint folder; on the production profile (moto's S3 server) they share nothing but the
bucket: the retry's data directory is empty."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.data import storage
from mlops.training.model import load_model, predict
from mlops.training.preemption import DEFAULT_GRACE_S
from mlops.training.train import TrainResult, train_model
from tests.e2e.production_services import AWS, S3Server, moto_s3

ROOT = Path(__file__).resolve().parents[2]
PARITY_TOLERANCE = 1e-4  # export_onnx's default: what "the same model" means downstream
BUCKET = "resume-bucket"
# From 0.1 s an epoch on a quiet machine to 2 s on a busy one: the signal goes as soon as
# the first checkpoint is seen, so that several epochs are still to come either way.
MODEL = ModelSettings(epochs=10, patience=100, batch_size=32, hidden=[32, 16], device="cpu",
                      seed=11)

# One worker: trains with train_model into an explicit folder, or runs the train stage with
# the settings of its environment (its own data directory, the profile's storage root).
WORKER = """
import json, sys
from mlops.config import DatasetSpec, ModelSettings, Settings
args = json.loads(sys.argv[1])
spec, model = DatasetSpec(**args["spec"]), ModelSettings(**args["model"])
if args["out"]:
    from mlops.training.train import train_model
    result = train_model(args["training"], spec, model, args["out"])
else:
    from mlops.pipeline.stages import train_stage
    result = train_stage(args["training"], spec, model, Settings())
print(result.model_dump_json())
"""


def start_worker(folder: Path, training: str, spec: DatasetSpec, out: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    args = json.dumps({"training": training, "spec": spec.model_dump(mode="json"),
                       "model": MODEL.model_dump(mode="json"), "out": out})
    with (folder / "stdout").open("w") as out_file, (folder / "stderr").open("w") as err_file:
        return subprocess.Popen([sys.executable, "-c", WORKER, args], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                stdout=out_file, stderr=err_file)


def kill_after_first_checkpoint(worker: subprocess.Popen, folder: Path,
                                checkpointed: Callable[[], bool]) -> float:
    """SIGTERM as soon as a checkpoint exists (the next epoch is under way); returns the
    seconds from the signal to the worker's exit."""
    deadline = time.monotonic() + 300
    while not checkpointed():
        assert worker.poll() is None, (folder / "stderr").read_text()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    assert worker.poll() is None, "the run finished before it could be interrupted"
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=DEFAULT_GRACE_S + 30)
    return time.monotonic() - sent


def finished(worker: subprocess.Popen, folder: Path) -> TrainResult:
    assert worker.wait(timeout=600) == 0, (folder / "stderr").read_text()
    return TrainResult.model_validate_json((folder / "stdout").read_text().strip())


def check_interrupted(worker: subprocess.Popen, folder: Path, seconds: float,
                      checkpoint: dict[str, Any]) -> int:
    """The run exited promptly, saying so, with a mid-run checkpoint; returns its epoch."""
    stderr = (folder / "stderr").read_text()
    assert worker.returncode == 1, stderr  # an error, not a kill (-15) or the watchdog (143)
    assert seconds < DEFAULT_GRACE_S, f"exited {seconds:.1f} s after SIGTERM"
    epoch = checkpoint["epoch"]
    assert f"TrainingInterrupted: training preempted (SIGTERM) at epoch {epoch}, " \
           "checkpoint saved" in stderr, stderr
    assert 1 <= epoch < MODEL.epochs and not checkpoint["finished"]
    assert checkpoint["progress"] is not None  # stopped between batches, position kept
    return epoch


def predictions(model_path: str, test: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    mlp, arch = load_model(model_path)
    return predict(mlp, arch.task, test[spec.features].to_numpy("float32"))


def check_same_model(resumed: TrainResult, straight: TrainResult, spec: DatasetSpec,
                     epoch: int) -> None:
    assert resumed.resumed_from_epoch == epoch
    assert straight.resumed_from_epoch is None
    assert resumed.epochs_run == straight.epochs_run == MODEL.epochs
    assert resumed.run_key == straight.run_key
    test = storage.read_parquet(straight.test_path)
    pd.testing.assert_frame_equal(storage.read_parquet(resumed.test_path), test)
    np.testing.assert_allclose(predictions(resumed.model_path, test, spec),
                               predictions(straight.model_path, test, spec),
                               rtol=0, atol=PARITY_TOLERANCE)
    assert resumed.metrics == pytest.approx(straight.metrics, abs=PARITY_TOLERANCE)


@pytest.fixture
def panel(tmp_path: Path) -> tuple[Path, DatasetSpec]:
    path = tmp_path / "panel.parquet"
    generate_panel(n_entities=800, n_periods=10, seed=5).to_parquet(path, index=False)
    return path, synthetic_spec(str(path), name="resume")


def test_sigterm_checkpoints_and_another_worker_resumes_to_the_same_model(
        tmp_path: Path, panel: tuple[Path, DatasetSpec]) -> None:
    path, spec = panel
    shared = tmp_path / "shared"  # what the workers share: the checkpoint folder
    worker_a = start_worker(tmp_path / "a", str(path), spec, str(tmp_path / "a" / "out"))
    seconds = kill_after_first_checkpoint(
        worker_a, tmp_path / "a", lambda: any((tmp_path / "a" / "out").glob("checkpoints/*/*.pt")))
    [saved] = (tmp_path / "a" / "out").glob("checkpoints/*/last.pt")
    assert not list(saved.parent.glob("*.tmp"))  # written atomically: no temp file left
    epoch = check_interrupted(worker_a, tmp_path / "a", seconds,
                              torch.load(saved, weights_only=True))
    assert not (tmp_path / "a" / "out" / "models").exists()  # no model from a stopped run

    # Worker B: a new, empty folder but for the checkpoint it finds in the shared store.
    (shared / "checkpoints" / saved.parent.name).mkdir(parents=True)
    (shared / "checkpoints" / saved.parent.name / "last.pt").write_bytes(saved.read_bytes())
    resumed = finished(start_worker(tmp_path / "b", str(path), spec, str(shared)), tmp_path / "b")
    straight = train_model(str(path), spec, MODEL, tmp_path / "straight")
    check_same_model(resumed, straight, spec, epoch)


def test_sigterm_restores_the_previous_handler(tmp_path: Path,
                                               panel: tuple[Path, DatasetSpec]) -> None:
    path, spec = panel
    seen: list[int] = []

    def previous(signum: int, frame: object) -> None:
        seen.append(signum)

    before = signal.signal(signal.SIGTERM, previous)
    try:
        train_model(str(path), spec, MODEL.model_copy(update={"epochs": 1}), tmp_path / "out")
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)


# --- production profile: the checkpoint in the object store --------------------------------

@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSSPEC_S3", "{}")  # the stage's process-wide S3 settings, undone after
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    with moto_s3(tmp_path / "moto.log") as server:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=BUCKET)
        yield server


def production_env(server: S3Server, data_dir: Path) -> dict[str, str]:
    # No MLflow server here: each worker tracks its training run in SQLite of its own,
    # beside its data directory (which must stay empty of anything but what it fetched).
    return {**AWS, "MLOPS_PROFILE": "production", "MLOPS_S3_ENDPOINT_URL": server.endpoint,
            "MLOPS_S3_BUCKET": BUCKET, "MLOPS_DATA_DIR": str(data_dir), "FSSPEC_S3": "{}",
            "MLOPS_TRACKING_URI": f"sqlite:///{data_dir.parent}/{data_dir.name}-mlflow.db"}


@pytest.mark.slow
def test_on_production_a_worker_with_an_empty_data_dir_resumes_from_the_object_store(
        tmp_path: Path, panel: tuple[Path, DatasetSpec], s3: S3Server) -> None:
    path, spec = panel
    settings = Settings(profile="production", s3_endpoint_url=s3.endpoint, s3_bucket=BUCKET,
                        data_dir=tmp_path / "straight")
    training = f"s3://{BUCKET}/features/resume/training.parquet"
    with storage.object_store(settings, "uploading the training set"):
        storage.write_parquet(training, pd.read_parquet(path))
    client = boto3.client("s3", endpoint_url=s3.endpoint)

    def objects(prefix: str) -> list[str]:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]

    data_a, data_b = tmp_path / "data-a", tmp_path / "data-b"
    worker_a = start_worker(tmp_path / "a", training, spec, env=production_env(s3, data_a))
    seconds = kill_after_first_checkpoint(worker_a, tmp_path / "a",
                                          lambda: bool(objects("training/resume/checkpoints/")))
    [key] = objects("training/resume/checkpoints/")
    assert key.endswith("/last.pt")
    saved = torch.load(io.BytesIO(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()),
                       weights_only=True)
    epoch = check_interrupted(worker_a, tmp_path / "a", seconds, saved)
    assert not objects("training/resume/models/")

    data_b.mkdir()  # worker B: an empty data directory, the same bucket
    resumed = finished(start_worker(tmp_path / "b", training, spec,
                                    env=production_env(s3, data_b)), tmp_path / "b")
    assert resumed.model_path.startswith(f"s3://{BUCKET}/training/resume/models/")
    assert resumed.checkpoint_path == f"s3://{BUCKET}/{key}"
    assert not [p for p in data_b.rglob("*") if p.is_file()]  # nothing needed a local file
    with storage.object_store(settings, "reading the models"):
        straight = train_model(training, spec, MODEL, tmp_path / "straight")
        check_same_model(resumed, straight, spec, epoch)
