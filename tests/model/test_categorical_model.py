"""Categorical and nullable features: learned on the train split, encoded inside the ONNX
graph (strings in, unknown bucket for unseen ones, medians for nulls), covered by parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from benchmarks.synthetic import CONTINENTS, generate_mixed_panel, mixed_spec
from mlops.config import DatasetSpec, ModelSettings, TaskType
from mlops.data.encoding import (
    MAX_CATEGORIES,
    EncodingError,
    category_text,
    encode,
    fit_encoding,
    raw_inputs,
)
from mlops.training.export import ExportResult, export_onnx
from mlops.training.model import TorchPredictor, load_model
from mlops.training.train import TrainingError, TrainResult, train_model

SETTINGS = ModelSettings(hidden=[32, 16], epochs=8, batch_size=64, learning_rate=0.01)


def _spec(tmp_path: Path, frame: pd.DataFrame, task: TaskType) -> DatasetSpec:
    path = tmp_path / "mixed.parquet"
    frame.to_parquet(path, index=False)
    return mixed_spec(str(path), task)


@pytest.fixture(scope="module", params=[TaskType.classification, TaskType.regression])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[TrainResult, ExportResult]:
    folder = tmp_path_factory.mktemp("mixed")
    spec = _spec(folder, generate_mixed_panel(n_entities=150, task=request.param), request.param)
    trained = train_model(spec.path, spec, SETTINGS, folder / "train")
    return trained, export_onnx(trained.model_path, trained.test_path, folder / "onnx")


def test_the_graph_takes_raw_numbers_and_strings(exported) -> None:
    trained, result = exported
    model = onnx.load(result.onnx_path)
    inputs = {i.name: (i.type.tensor_type.elem_type,
                       [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in model.graph.input}
    assert inputs == {"features": (onnx.TensorProto.FLOAT, ["batch", 3]),
                      "categories": (onnx.TensorProto.STRING, ["batch", 2])}
    assert {n.op_type for n in model.graph.node} >= {"LabelEncoder", "IsNaN", "Where", "Gather"}
    assert result.max_abs_diff <= result.tolerance == 1e-4
    assert result.parity_rows == trained.test_rows


def test_the_network_learns_from_the_categories(exported) -> None:
    trained, _ = exported
    if trained.primary_metric == "test_auc":
        assert trained.metrics["test_auc"] > 0.85
    else:  # the label's spread is about 2: the categories carry most of it
        assert trained.metrics["test_rmse"] < 1.0


def test_onnx_on_raw_rows_matches_torch_on_encoded_rows(exported) -> None:
    """Unseen categories, nulls, codes as floats or strings: the graph's encoding is
    numpy's, value for value."""
    trained, result = exported
    mlp, arch = load_model(trained.model_path)
    rows = pd.DataFrame({
        "continent": ["Asia", "Atlantis", None, "Europe", "", "Oceania"],
        "occupation": [3, 3.0, "3", None, 99, 7],
        "hours": [40.0, np.nan, 12.5, None, 80.0, 35.0],
        "f0": [0.1, -1.0, 2.0, 0.0, 0.5, 1.5], "f1": [1.0, 0.2, -0.3, 0.0, 0.0, -2.0],
    }, dtype=object)
    session = ort.InferenceSession(result.onnx_path, providers=["CPUExecutionProvider"])
    got = session.run(["prediction"], raw_inputs(rows, arch.encoding))[0]
    with torch.no_grad():
        want = TorchPredictor(mlp, arch.task).eval()(
            torch.as_tensor(encode(rows, arch.encoding))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Row 1 names an unseen continent, row 2 a null one: the same unknown bucket.
    same = rows.iloc[[1]].assign(continent=None, hours=np.nan)
    assert session.run(["prediction"], raw_inputs(same, arch.encoding))[0][0] == pytest.approx(
        got[1], abs=1e-6)


def test_encoding_is_learned_on_the_train_split_only(tmp_path: Path) -> None:
    frame = generate_mixed_panel(n_entities=40)
    spec = _spec(tmp_path, frame, TaskType.classification)
    encoding = fit_encoding(frame, spec)
    assert encoding.numeric == ["hours", "f0", "f1"]
    assert encoding.fill[0] == pytest.approx(frame["hours"].median())
    assert sorted(encoding.categories[0]) == sorted(CONTINENTS)
    assert sorted(encoding.categories[1]) == [str(code) for code in range(1, 10)]
    assert encoding.width == 3 + (len(CONTINENTS) + 1) + (9 + 1)
    matrix = encode(frame, encoding)
    assert matrix.shape == (len(frame), encoding.width) and np.isfinite(matrix).all()
    one_hot = matrix[:, 3:]
    assert (one_hot.sum(axis=1) == 2).all()  # one column per categorical feature
    null_codes = frame["occupation"].isna().to_numpy()
    assert null_codes.any() and (matrix[null_codes, 3 + len(CONTINENTS) + 1] == 1).all()


def test_rare_categories_beyond_the_cap_share_the_unknown_bucket(tmp_path: Path) -> None:
    frame = generate_mixed_panel(n_entities=100)
    frame["continent"] = [f"c{i % (MAX_CATEGORIES + 20)}" for i in range(len(frame))]
    frame.loc[:49, "continent"] = "common"
    spec = _spec(tmp_path, frame, TaskType.classification)
    known = fit_encoding(frame, spec).categories[0]
    assert len(known) == MAX_CATEGORIES and known[0] == "common"


@pytest.mark.parametrize(("value", "text"), [
    (3, "3"), (3.0, "3"), ("3", "3"), (np.int64(3), "3"), (np.float32(3.0), "3"),
    ("Asia", "Asia"), (None, ""), (float("nan"), ""), (2.5, "2.5"), (True, "True")])
def test_category_text_makes_one_category_of_one_code(value, text) -> None:
    assert category_text(value) == text


def test_a_feature_null_in_every_train_row_is_refused(tmp_path: Path) -> None:
    frame = generate_mixed_panel(n_entities=30)
    frame["hours"] = np.nan
    spec = _spec(tmp_path, frame, TaskType.classification)
    with pytest.raises(EncodingError, match="'hours' is null in every train row"):
        fit_encoding(frame, spec)
    with pytest.raises(TrainingError, match="'hours' is null in every train row"):
        train_model(spec.path, spec, SETTINGS, tmp_path / "out")
