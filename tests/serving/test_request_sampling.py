"""The service's request sample for drift monitoring: what the clients sent and what the
model answered, written off the request path, bounded in memory and on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_setup import serving_manager

from benchmarks.synthetic import generate_mixed_panel, mixed_spec
from mlops.atomic_files import sha256_file
from mlops.config import ModelSettings, TaskType
from mlops.data import storage
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.sampling import RequestSampler, file_time, requests_folder
from mlops.training.export import export_onnx
from mlops.training.train import train_model

RECORDS = [
    {"continent": "Asia", "occupation": 3, "hours": 40.0, "f0": 0.5, "f1": -1.0},
    {"continent": "Atlantis", "occupation": None, "hours": None, "f0": 0.0, "f1": 0.0},
]


def sampled(root: Path, model: str) -> pd.DataFrame:
    files = storage.list_files(requests_folder(str(root), model))
    assert files, f"no sample written for {model}"
    return pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("sampled-mixed")
    path = folder / "mixed.parquet"
    generate_mixed_panel(n_entities=40).to_parquet(path, index=False)
    spec = mixed_spec(str(path), TaskType.classification)
    trained = train_model(str(path), spec, ModelSettings(hidden=[8], epochs=2), folder / "t")
    onnx_path = Path(export_onnx(trained.model_path, trained.test_path, folder / "o").onnx_path)
    return onnx_path, sha256_file(onnx_path)


@pytest.mark.parametrize("window_ms", [2.0, 0.0], ids=["micro-batching", "direct"])
def test_raw_values_and_predictions_are_recorded(mixed_model, tmp_path, window_ms) -> None:
    config = ServingConfig(batch_window_ms=window_ms, sample_rate=1.0,
                           sample_root=str(tmp_path), sample_flush_s=3600)
    with TestClient(create_app(serving_manager(*mixed_model, name="mixed"), None,
                               config)) as client:
        answer = client.post("/v1/predict", json={"records": RECORDS})
        assert answer.status_code == 200, answer.text
    # Closing the service wrote what it held.
    frame = sampled(tmp_path, "mixed")
    assert frame["continent"].tolist() == ["Asia", "Atlantis"]
    assert frame["occupation"].tolist() == ["3", ""]  # a code as its category; null as ""
    assert frame["hours"].iloc[0] == 40.0 and np.isnan(frame["hours"].iloc[1])
    np.testing.assert_allclose(frame["prediction"], answer.json()["predictions"], atol=1e-6)
    assert set(frame["model_version"]) == {"3"}
    assert frame["scored_at"].dt.tz is not None


def test_the_fast_lane_is_sampled_too(onnx_model, tmp_path) -> None:
    config = ServingConfig(sample_rate=1.0, sample_root=str(tmp_path), sample_flush_s=3600)
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]]
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4],
                        "data": rows}]}
    with TestClient(create_app(serving_manager(*onnx_model), None, config)) as client:
        answer = client.post("/v2/models/synthetic/infer", json=body)
        assert answer.status_code == 200, answer.text
    frame = sampled(tmp_path, "synthetic")
    np.testing.assert_allclose(frame.iloc[:, :4].to_numpy(), rows, rtol=1e-6)
    np.testing.assert_allclose(frame["prediction"], answer.json()["outputs"][0]["data"],
                               rtol=1e-5)


def test_a_share_of_rows_is_kept_and_memory_is_bounded(predictor: OnnxPredictor,
                                                         tmp_path) -> None:
    rows = np.random.default_rng(0).normal(size=(10_000, 4)).astype(np.float32)
    sampler = RequestSampler(str(tmp_path), rate=0.1, max_rows=600, seed=1)
    for chunk in np.array_split(rows, 100):
        sampler.offer(predictor, chunk, predictor.predict(chunk))
    # About 1,000 rows drawn (binomial, sd 30); the bound of 600 held, the rest counted.
    assert sampler.kept <= 600 < sampler.kept + sampler.dropped
    assert 880 <= sampler.kept + sampler.dropped <= 1120
    sampler.flush()
    assert len(sampled(tmp_path, "synthetic")) == sampler.kept == sampler.written
    assert sampler.flush() == []  # nothing held any more: nothing written


def test_the_oldest_files_go_past_the_disk_bound(predictor: OnnxPredictor, tmp_path) -> None:
    sampler = RequestSampler(str(tmp_path), rate=1.0, keep_files=3)
    rows = np.ones((2, 4), dtype=np.float32)
    written = []
    for _ in range(5):
        sampler.offer(predictor, rows, predictor.predict(rows))
        written += sampler.flush()
    left = storage.list_files(requests_folder(str(tmp_path), "synthetic"))
    assert left == written[-3:]
    assert all(file_time(path.rsplit("/", 1)[-1]) for path in left)


def test_sampling_without_a_root_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_root"):
        ServingConfig(sample_rate=0.5)
