"""A label of several classes (strings or integer codes): one output per class, trained on
cross-entropy, ranked by macro one-vs-rest AUC, exported with its classes and checked for
parity; a test split that lacks a class, or a label of mixed types, is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from benchmarks.synthetic import GRADES, generate_mixed_panel, mixed_spec
from mlops.config import ModelSettings, TaskType
from mlops.training.export import ExportResult, export_onnx
from mlops.training.model import macro_auc_ovr, quality_metrics, roc_auc
from mlops.training.train import (
    TrainingError,
    TrainResult,
    label_classes,
    primary_metric,
    train_model,
)

SETTINGS = ModelSettings(hidden=[32, 16], epochs=15, batch_size=64, learning_rate=0.01)


def _write(folder: Path, frame: pd.DataFrame) -> str:
    path = folder / "grades.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, ExportResult]:
    folder = tmp_path_factory.mktemp("multiclass")
    path = _write(folder, generate_mixed_panel(n_entities=200, task=TaskType.multiclass))
    spec = mixed_spec(path, TaskType.multiclass)
    trained = train_model(path, spec, SETTINGS, folder / "train")
    return trained, export_onnx(trained.model_path, trained.test_path, folder / "onnx")


def test_one_probability_per_class_in_the_classes_order(exported) -> None:
    trained, result = exported
    session = ort.InferenceSession(result.onnx_path, providers=["CPUExecutionProvider"])
    assert [o.shape for o in session.get_outputs()] == [["batch", 3]]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == sorted(GRADES) and meta["task"] == "multiclass"
    assert result.max_abs_diff <= 1e-4 and result.parity_rows == trained.test_rows


def test_ranked_by_macro_auc_beside_the_baseline(exported) -> None:
    trained, _ = exported
    assert (trained.primary_metric, trained.higher_is_better) == ("test_auc_ovr", True)
    assert trained.metrics["test_auc_ovr"] > 0.8
    assert {"test_accuracy", "baseline_test_accuracy", "baseline_test_auc_ovr"} <= set(
        trained.metrics)
    assert trained.baseline_model == "hist_gradient_boosting"
    assert primary_metric(TaskType.multiclass) == ("test_auc_ovr", True)


def test_macro_auc_is_the_mean_of_each_class_against_the_rest() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    proba = rng.dirichlet(np.ones(3), size=len(y))
    expected = np.mean([roc_auc(y == k, proba[:, k]) for k in range(3)])
    assert macro_auc_ovr(y, proba) == pytest.approx(expected)
    metrics = quality_metrics(TaskType.multiclass, y, proba, "test")
    assert metrics["test_accuracy"] == pytest.approx(np.mean(proba.argmax(1) == y))
    assert "test_auc_ovr" not in quality_metrics(TaskType.multiclass, y[y < 2], proba[y < 2],
                                                 "test")


@pytest.mark.parametrize(("labels", "classes"), [
    (["b", "a", "c", "a"], ["a", "b", "c"]),
    ([3, 1.0, 2, 1], [1, 2, 3]),
])
def test_classes_are_sorted_codes_or_strings(labels, classes) -> None:
    frame = pd.DataFrame({"label": pd.Series(labels, dtype=object)})
    assert label_classes(frame, mixed_spec("x", TaskType.multiclass)) == classes


@pytest.mark.parametrize(("labels", "message"), [
    (["a", 1, "b"], "must hold integer codes or strings, not int, str"),
    ([1.5, 2.0, 1.0], "must hold integer codes or strings, not float"),
    (["a", None, "b"], "has 1 null"),
    (["a", "a"], "has a single class ['a']"),
])
def test_labels_that_are_no_classes_are_refused(labels, message) -> None:
    frame = pd.DataFrame({"label": pd.Series(labels, dtype=object)})
    with pytest.raises(TrainingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        label_classes(frame, mixed_spec("x", TaskType.multiclass))


def test_a_test_split_without_a_class_is_refused_before_training(tmp_path: Path) -> None:
    frame = generate_mixed_panel(n_entities=60, task=TaskType.multiclass)
    last = frame["event_timestamp"] == frame["event_timestamp"].max()
    frame.loc[last & (frame["label"] == "high"), "label"] = "low"
    path = _write(tmp_path, frame)
    spec = mixed_spec(path, TaskType.multiclass)
    settings = SETTINGS.model_copy(update={"test_fraction": 0.1})
    with pytest.raises(TrainingError, match=r"test split lacks class\(es\) \['high'\].*"
                       "test_auc_ovr would be undefined"):
        train_model(path, spec, settings, tmp_path / "out")
    assert not (tmp_path / "out" / "models").exists()
