"""Training core: time split, device choice, determinism, early stopping, resume, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import DatasetSpec, ModelSettings, TaskType
from mlops.training.loop import (
    LoopState,
    TrainingError,
    choose_precision,
    cpu_threads,
    resolve_device,
)
from mlops.training.model import load_model, roc_auc
from mlops.training.train import primary_metric, split_by_time, train_model

FAST = ModelSettings(hidden=[16], epochs=6, patience=10, batch_size=64, dropout=0.1)


class Interrupt(RuntimeError):
    """Stands in for a preemption after a checkpoint was written."""


def write_panel(path: Path, **kwargs: object) -> tuple[str, DatasetSpec]:
    frame = generate_panel(**{"n_entities": 60, "n_periods": 8, **kwargs})
    frame.to_parquet(path)
    task = kwargs.get("task", TaskType.classification)
    return str(path), synthetic_spec(str(path), task=task)  # type: ignore[arg-type]


def weights(model_path: str) -> dict[str, torch.Tensor]:
    return load_model(model_path)[0].state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- split --------------------------------------------------------------------------------

def test_split_keeps_time_order_and_whole_timestamps() -> None:
    frame = generate_panel(n_entities=30, n_periods=12)
    # uneven rows per timestamp, so the row fractions do not land on a timestamp boundary
    frame = frame.drop(frame.index[frame["event_timestamp"] == frame["event_timestamp"].max()][:9])
    spec = synthetic_spec("unused.parquet")
    train, val, test = split_by_time(frame, spec, ModelSettings())
    ts = "event_timestamp"
    assert train[ts].max() < val[ts].min() <= val[ts].max() < test[ts].min()
    assert len(train) + len(val) + len(test) == len(frame)
    for part in (train, val, test):  # every timestamp's rows all land in one split
        counts = part[ts].value_counts()
        assert (counts == frame[ts].value_counts()[counts.index]).all()


def test_split_of_eight_years_is_six_one_one() -> None:
    frame = generate_panel(n_entities=20, n_periods=8, freq="365D")
    train, val, test = split_by_time(frame, synthetic_spec("x"), ModelSettings())
    assert [part["event_timestamp"].nunique() for part in (train, val, test)] == [6, 1, 1]


def test_split_follows_the_fractions() -> None:
    frame = generate_panel(n_entities=5, n_periods=20)
    settings = ModelSettings(val_fraction=0.2, test_fraction=0.3)
    parts = split_by_time(frame, synthetic_spec("x"), settings)
    assert [part["event_timestamp"].nunique() for part in parts] == [10, 4, 6]


def test_split_needs_three_timestamps() -> None:
    frame = generate_panel(n_entities=50, n_periods=2)
    with pytest.raises(TrainingError, match="at least 3 distinct timestamps .*found 2"):
        split_by_time(frame, synthetic_spec("x"), ModelSettings())


# --- device, metrics ----------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_device_auto_is_cpu_and_cuda_request_fails_clearly() -> None:
    assert resolve_device(ModelSettings(device="auto")) == torch.device("cpu")
    assert choose_precision(torch.device("cpu")) == "fp32"
    with pytest.raises(TrainingError, match="'cuda' was requested but CUDA is not available"):
        resolve_device(ModelSettings(device="cuda"))


def test_roc_auc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * y, 1)  # rounding makes many ties
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert primary_metric(TaskType.classification) == ("test_auc", True)
    assert primary_metric(TaskType.regression) == ("test_rmse", False)


# --- the loop -----------------------------------------------------------------------------

def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    first = train_model(path, spec, FAST, tmp_path / "a")
    second = train_model(path, spec, FAST, tmp_path / "b")
    assert second.resumed_from_epoch is None
    assert_same_weights(weights(first.model_path), weights(second.model_path))
    assert first.metrics == second.metrics
    other = train_model(path, spec, FAST.model_copy(update={"seed": 7}), tmp_path / "c")
    assert not torch.equal(weights(other.model_path)["net.0.weight"],
                           weights(first.model_path)["net.0.weight"])


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    frame = pd.read_parquet(path)
    frame["label"] = np.random.default_rng(3).integers(0, 2, len(frame))  # nothing to learn
    frame.to_parquet(path)
    settings = ModelSettings(hidden=[32], epochs=200, patience=3, learning_rate=0.02,
                             batch_size=32, dropout=0.0)
    result = train_model(path, spec, settings, tmp_path / "out")
    assert result.epochs_run < 200
    assert result.epochs_run == result.best_epoch + settings.patience
    history = torch.load(result.checkpoint_path, weights_only=True)["history"]
    assert result.metrics["val_loss"] == min(h["val_loss"] for h in history)


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    out = tmp_path / "out"
    seen: list[int] = []

    def preempt_after_three(state: LoopState) -> None:
        seen.append(state.epoch)
        if state.epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_model(path, spec, FAST, out, on_epoch_end=preempt_after_three)
    assert len(list(out.glob("checkpoints/*/last.pt"))) == 1
    assert not list(out.glob("models/*/model.pt"))
    resumed = train_model(path, spec, FAST, out, on_epoch_end=lambda s: seen.append(s.epoch))
    assert resumed.resumed_from_epoch == 3
    assert seen == [1, 2, 3, 4, 5, 6]
    assert resumed.epochs_run == FAST.epochs
    straight = train_model(path, spec, FAST, tmp_path / "straight")
    assert_same_weights(weights(resumed.model_path), weights(straight.model_path))
    assert resumed.metrics == straight.metrics


def test_finished_run_returns_without_training(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    first = train_model(path, spec, FAST, tmp_path / "out")
    calls: list[int] = []
    again = train_model(path, spec, FAST, tmp_path / "out", on_epoch_end=lambda s: calls.append(1))
    assert calls == []
    assert again.resumed_from_epoch == first.epochs_run
    assert again.metrics == first.metrics
    assert_same_weights(weights(first.model_path), weights(again.model_path))


def test_other_settings_or_data_do_not_reuse_a_checkpoint(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    first = train_model(path, spec, FAST, tmp_path / "out")
    changed = train_model(path, spec, FAST.model_copy(update={"learning_rate": 0.01}),
                          tmp_path / "out")
    assert changed.resumed_from_epoch is None and changed.run_key != first.run_key
    Path(first.checkpoint_path).write_bytes(b"not a checkpoint")
    fresh = train_model(path, spec, FAST, tmp_path / "out")
    assert fresh.resumed_from_epoch is None
    assert_same_weights(weights(first.model_path), weights(fresh.model_path))


# --- errors -------------------------------------------------------------------------------

def test_single_class_train_split_is_refused(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    frame = pd.read_parquet(path)
    early = frame["event_timestamp"] < frame["event_timestamp"].sort_values().unique()[6]
    frame.loc[early, "label"] = 0
    frame.to_parquet(path)
    with pytest.raises(TrainingError, match="train split has a single class"):
        train_model(path, spec, FAST, tmp_path / "out")


def test_non_binary_label_is_refused(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    frame = pd.read_parquet(path)
    frame.loc[0, "label"] = 2
    frame.to_parquet(path)
    with pytest.raises(TrainingError, match=r"must be 0/1, found \[2.0\]"):
        train_model(path, spec, FAST, tmp_path / "out")


def test_missing_values_and_columns_are_named(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    frame = pd.read_parquet(path)
    frame.loc[3, "f2"] = np.inf
    frame.to_parquet(path)
    with pytest.raises(TrainingError, match=r"NaN or infinite values: \['f2'\]"):
        train_model(path, spec, FAST, tmp_path / "out")
    frame["f2"] = np.nan  # no feature values at all at or before the label timestamps
    frame.to_parquet(path)
    with pytest.raises(TrainingError, match="no rows with features"):
        train_model(path, spec, FAST, tmp_path / "out")
    frame.drop(columns=["f1"]).to_parquet(path)
    with pytest.raises(TrainingError, match=r"lacks columns \['f1'\]"):
        train_model(path, spec, FAST, tmp_path / "out")
    with pytest.raises(TrainingError, match="training set not found"):
        train_model(str(tmp_path / "nope.parquet"), spec, FAST, tmp_path / "out")


def test_labels_without_point_in_time_features_are_dropped(tmp_path: Path) -> None:
    path, spec = write_panel(tmp_path / "train.parquet")
    frame = pd.read_parquet(path)
    first = frame["event_timestamp"].min()
    frame.loc[frame["event_timestamp"] == first, ["f0", "f1"]] = np.nan
    frame.to_parquet(path)
    result = train_model(path, spec, FAST, tmp_path / "out")
    assert result.train_rows + result.val_rows + result.test_rows == len(frame) - 60


def test_small_models_train_on_one_cpu_thread() -> None:
    assert cpu_threads(ModelSettings(hidden=[64, 32], batch_size=256), 9) == 1
    big = ModelSettings(hidden=[512, 256], batch_size=1024)
    assert cpu_threads(big, 32) == len(os.sched_getaffinity(0))
