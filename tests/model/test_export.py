"""ONNX export: the contract serving relies on, parity with torch, and failed parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.atomic_files import sha256_file
from mlops.config import ModelSettings, TaskType
from mlops.training.export import (
    ExportError,
    ExportResult,
    ParityError,
    check_parity,
    export_onnx,
)
from mlops.training.model import TorchPredictor, load_model
from mlops.training.train import TrainResult, train_model

SETTINGS = ModelSettings(hidden=[32, 16], epochs=5, batch_size=64)


def train(folder: Path, task: TaskType, label_scale: float = 1.0) -> TrainResult:
    frame = generate_panel(n_entities=80, n_periods=8, n_features=5, task=task)
    frame["label"] = frame["label"] * label_scale
    path = folder / "train.parquet"
    frame.to_parquet(path)
    spec = synthetic_spec(str(path), task=task, n_features=5)
    return train_model(str(path), spec, SETTINGS, folder / "train")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, ExportResult]:
    folder = tmp_path_factory.mktemp("export")
    trained = train(folder, TaskType.classification)
    return trained, export_onnx(trained.model_path, trained.test_path, folder / "onnx")


def test_parity_on_the_whole_test_split(exported: tuple[TrainResult, ExportResult]) -> None:
    trained, result = exported
    assert result.max_abs_diff <= 1e-4
    assert result.parity_rows == trained.test_rows == len(pd.read_parquet(trained.test_path))
    assert result.sha256 == sha256_file(result.onnx_path)
    assert result.opset == 18 and result.exporter == "dynamo"


def test_graph_contract(exported: tuple[TrainResult, ExportResult]) -> None:
    model = onnx.load(exported[1].onnx_path)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("features", "prediction")
    float32 = onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == float32
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [5]
    assert out_dims == [in_dims[0]]
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 18


def test_metadata_names_features_task_and_dataset(
        exported: tuple[TrainResult, ExportResult]) -> None:
    meta = {p.key: p.value for p in onnx.load(exported[1].onnx_path).metadata_props}
    assert json.loads(meta["feature_names"]) == [f"f{i}" for i in range(5)]
    assert meta["task"] == "classification"
    assert meta["label"] == "label"
    assert meta["dataset"] == "synthetic"
    assert meta["opset"] == "18"


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_dynamic_batch(exported: tuple[TrainResult, ExportResult], batch: int) -> None:
    trained, result = exported
    session = ort.InferenceSession(result.onnx_path, providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(batch).normal(size=(batch, 5)).astype(np.float32)
    got = session.run(["prediction"], {"features": rows})[0]
    mlp, arch = load_model(trained.model_path)
    with torch.no_grad():
        expected = TorchPredictor(mlp, arch.task)(torch.from_numpy(rows)).numpy()
    assert got.shape == (batch,) and got.dtype == np.float32
    assert ((got >= 0) & (got <= 1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_regression_exports_values_in_original_units(tmp_path: Path) -> None:
    trained = train(tmp_path, TaskType.regression, label_scale=100.0)
    result = export_onnx(trained.model_path, trained.test_path, tmp_path / "onnx",
                         tolerance=1e-3)
    test = pd.read_parquet(trained.test_path)
    session = ort.InferenceSession(result.onnx_path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": test[[f"f{i}" for i in range(5)]].to_numpy("float32")})
    rmse = float(np.sqrt(np.mean((got[0] - test["label"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(trained.metrics["test_rmse"], rel=1e-4)
    # in label units (std ~100), not the standardised units the loss used (std ~1)
    assert np.std(got[0]) > 0.3 * test["label"].std()
    assert abs(np.mean(got[0]) - test["label"].mean()) < 0.5 * test["label"].std()


def test_failed_parity_raises_and_leaves_no_file(tmp_path: Path) -> None:
    # values of ~1e4 differ in float32 between the two runtimes, so tolerance 0 must fail
    trained = train(tmp_path, TaskType.regression, label_scale=1e4)
    out = tmp_path / "onnx"
    with pytest.raises(ParityError, match=r"differ by .* above the tolerance 0\.000e\+00"):
        export_onnx(trained.model_path, trained.test_path, out, tolerance=0.0)
    assert list(out.iterdir()) == []


def test_a_perturbed_torch_model_fails_parity(exported: tuple[TrainResult, ExportResult]) -> None:
    trained, result = exported
    mlp, arch = load_model(trained.model_path)
    features = pd.read_parquet(trained.test_path)[arch.feature_names].to_numpy("float32")
    predictor = TorchPredictor(mlp, arch.task).eval()
    assert check_parity(result.onnx_path, predictor, features, 1e-4) <= 1e-4
    with torch.no_grad():
        mlp.net[-1].bias += 0.5
    with pytest.raises(ParityError, match="above the tolerance 1.000e-04"):
        check_parity(result.onnx_path, predictor, features, 1e-4)


def test_bad_inputs_are_named(exported: tuple[TrainResult, ExportResult], tmp_path: Path) -> None:
    trained, _ = exported
    with pytest.raises(ExportError, match="tolerance must be >= 0"):
        export_onnx(trained.model_path, trained.test_path, tmp_path, tolerance=-1.0)
    with pytest.raises(ExportError, match="test split not found"):
        export_onnx(trained.model_path, str(tmp_path / "none.parquet"), tmp_path)
    pd.read_parquet(trained.test_path).drop(columns=["f3"]).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ExportError, match=r"lacks feature columns \['f3'\]"):
        export_onnx(trained.model_path, str(tmp_path / "t.parquet"), tmp_path)
    with pytest.raises(ValueError, match="model file not found"):
        export_onnx(str(tmp_path / "none.pt"), trained.test_path, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))
