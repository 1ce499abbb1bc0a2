"""The model learns what can be learned: synthetic panels and the default wage_panel."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import DEFAULT_SPEC, ModelSettings, TaskType, load_spec
from mlops.data.loading import load_dataset
from mlops.training.train import train_model

log = logging.getLogger(__name__)
SETTINGS = ModelSettings(hidden=[32, 16], epochs=30, patience=4, batch_size=128,
                         learning_rate=3e-3)


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_parquet(path)
    return str(path)


def test_classifier_learns_a_learnable_panel(tmp_path: Path) -> None:
    path = write(generate_panel(n_entities=300, n_periods=10, seed=1), tmp_path / "t.parquet")
    result = train_model(path, synthetic_spec(path), SETTINGS, tmp_path / "out")
    assert result.metrics["test_auc"] > 0.8
    assert result.metrics["test_accuracy"] > 0.7
    assert result.metrics["val_auc"] > 0.8
    assert result.primary_metric == "test_auc" and result.higher_is_better


def test_regressor_beats_the_label_spread(tmp_path: Path) -> None:
    frame = generate_panel(n_entities=300, n_periods=10, task=TaskType.regression, seed=2)
    frame["label"] = 50.0 + 10.0 * frame["label"]  # away from 0 and 1: units must round-trip
    path = write(frame, tmp_path / "t.parquet")
    spec = synthetic_spec(path, task=TaskType.regression)
    result = train_model(path, spec, SETTINGS, tmp_path / "out")
    test_std = pd.read_parquet(result.test_path)["label"].std()
    assert result.metrics["test_rmse"] < 0.4 * test_std
    assert result.metrics["test_mae"] < result.metrics["test_rmse"]
    assert result.primary_metric == "test_rmse" and not result.higher_is_better


def test_default_wage_panel_trains_to_a_useful_auc(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    spec = load_spec(DEFAULT_SPEC)
    frame = load_dataset(spec)[spec.columns]
    path = write(frame, tmp_path / "wage_panel.parquet")
    started = time.perf_counter()
    result = train_model(path, spec, ModelSettings(), tmp_path / "out")
    seconds = time.perf_counter() - started
    log.warning("wage_panel: %.1f s, %d epochs (best %d), test_auc %.3f, %d/%d/%d rows",
                seconds, result.epochs_run, result.best_epoch, result.metrics["test_auc"],
                result.train_rows, result.val_rows, result.test_rows)
    assert (result.train_rows, result.val_rows, result.test_rows) == (3270, 545, 545)
    assert result.metrics["test_auc"] > 0.6
    assert result.device == "cpu" and result.precision == "fp32"
