"""Training: a time-ordered split, the seeded loop with per-epoch checkpoints, test metrics.

The pure parts (split, metrics, the loop over tensors) are separate from ``train_model``,
the runner that reads the training set and writes the model, test split and checkpoints,
locally or in the object store, so a retry on another worker resumes where SIGTERM (or a
crash) stopped the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from mlops.config import DatasetSpec, ModelSettings, TaskType
from mlops.data import storage
from mlops.data.encoding import EncodingError, FeatureEncoding, encode, fit_encoding
from mlops.training.factory import build_loss, check_network
from mlops.training.loop import (
    CHECKPOINT_FORMAT,
    LoopState,
    TrainingError,
    choose_precision,
    cpu_threads,
    fit,
    new_loop_state,
    resolve_device,
    resume_checkpoint,
    save_checkpoint,
    seed_everything,
)
from mlops.training.model import (
    MLP,
    ModelArch,
    TorchPredictor,
    build_mlp,
    column_stats,
    predict,
    quality_metrics,
)
from mlops.training.model import save_model as save_model_file
from mlops.training.preemption import DEFAULT_GRACE_S, TrainingInterrupted, preemptible

if TYPE_CHECKING:
    from mlops.training.baseline import BaselineResult

log = logging.getLogger(__name__)


class TrainResult(BaseModel):
    """What the train stage hands over: files, metrics and how the run went."""

    model_path: str
    test_path: str
    checkpoint_path: str
    run_key: str
    metrics: dict[str, float]
    primary_metric: str
    higher_is_better: bool
    device: str
    precision: str
    epochs_run: int
    best_epoch: int
    resumed_from_epoch: int | None
    train_rows: int
    val_rows: int
    test_rows: int
    samples_per_second: float
    baseline_model: str  # fitted on the same split; its metrics are the baseline_* ones
    mlflow_run_id: str | None = None  # the run it was tracked in (mlops.pipeline.tracked)


def primary_metric(task: TaskType) -> tuple[str, bool]:
    """The metric that ranks models of this task, and whether higher is better."""
    return {TaskType.classification: ("test_auc", True),
            TaskType.multiclass: ("test_auc_ovr", True)}.get(task, ("test_rmse", False))


# --- split --------------------------------------------------------------------------------

def split_by_time(frame: pd.DataFrame, spec: DatasetSpec,
                  settings: ModelSettings) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train on the earliest timestamps, validate on the next, test on the last ones.

    Boundaries fall between distinct timestamps (never inside one), at the row fractions
    closest to the settings, so no test row is earlier than any train row.
    """
    if spec.timestamp not in frame.columns:
        raise TrainingError(f"timestamp column {spec.timestamp!r} is missing")
    stamps = frame[spec.timestamp]
    if stamps.isna().any():
        raise TrainingError(f"timestamp column {spec.timestamp!r} has {stamps.isna().sum()} nulls")
    counts = stamps.value_counts().sort_index()
    if len(counts) < 3:
        raise TrainingError(f"need at least 3 distinct timestamps for train/validation/test, "
                            f"found {len(counts)}")
    val_at, test_at = _split_points(counts.to_numpy(), settings.val_fraction,
                                    settings.test_fraction)
    times = counts.index
    train = frame[stamps < times[val_at]]
    val = frame[(stamps >= times[val_at]) & (stamps < times[test_at])]
    test = frame[stamps >= times[test_at]]
    return (train.reset_index(drop=True), val.reset_index(drop=True),
            test.reset_index(drop=True))


def _split_points(counts: np.ndarray, val_fraction: float,
                  test_fraction: float) -> tuple[int, int]:
    """Indices of the first validation and first test timestamp (each split non-empty)."""
    n = len(counts)
    tail = 1.0 - np.concatenate([[0.0], np.cumsum(counts)[:-1]]) / counts.sum()
    test_at = min(range(2, n), key=lambda k: (abs(tail[k] - test_fraction), -k))
    val_at = min(range(1, test_at),
                 key=lambda k: (abs(tail[k] - tail[test_at] - val_fraction), -k))
    return val_at, test_at


# --- input checks -------------------------------------------------------------------------

def label_classes(frame: pd.DataFrame, spec: DatasetSpec) -> list[int | str] | None:
    """A multiclass label's classes, sorted: integer codes (3 and 3.0 are one) or strings,
    never a mix; None for other tasks. Taken from every split, so a class seen only late is
    still an output of the network (its rows teach it nothing until it is retrained)."""
    if spec.task != TaskType.multiclass:
        return None
    values = frame[spec.label]
    if values.isna().any():
        raise TrainingError(f"label {spec.label!r} has {int(values.isna().sum())} null(s)")
    distinct = pd.unique(values).tolist()
    if all(isinstance(v, str) for v in distinct):
        classes: list[int | str] = sorted(distinct)
    elif all(isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
             for v in distinct):
        classes = sorted({int(v) for v in distinct})
    else:
        shown = sorted({type(v).__name__ for v in distinct})
        raise TrainingError(f"multiclass label {spec.label!r} must hold integer codes or "
                            f"strings, not {', '.join(shown)}")
    if len(classes) < 2:
        raise TrainingError(f"multiclass label {spec.label!r} has a single class {classes}")
    return classes


def class_indices(values: pd.Series, classes: list[int | str]) -> np.ndarray:
    """Each label's position in ``classes``, as float32 (the loss takes them as int64)."""
    position = {str(c): i for i, c in enumerate(classes)}
    texts = [str(int(v)) if isinstance(v, float) else str(v) for v in values.tolist()]
    return np.array([position[t] for t in texts], dtype=np.float32)


def frame_to_arrays(frame: pd.DataFrame, spec: DatasetSpec,
                    encoding: FeatureEncoding | None = None,
                    classes: list[int | str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The network's features (float32: the spec's numbers as they are, or ``encoding``'s
    columns) and the label (float32; a multiclass label's index in ``classes``); bad values
    raise TrainingError."""
    missing = [c for c in [*spec.features, spec.label] if c not in frame.columns]
    if missing:
        raise TrainingError(f"training set lacks columns {missing}")
    try:
        x = (frame[spec.features].to_numpy(dtype=np.float32) if encoding is None
             else encode(frame, encoding))
        y = (frame[spec.label].to_numpy(dtype=np.float32) if classes is None
             else class_indices(frame[spec.label], classes))
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"features and label must be numeric: {exc}") from None
    if not np.isfinite(x).all():
        names = spec.features if encoding is None else encoding.columns
        bad = [c for c, ok in zip(names, np.isfinite(x).all(axis=0), strict=True) if not ok]
        raise TrainingError(f"features hold NaN or infinite values: {bad}")
    if not np.isfinite(y).all():
        raise TrainingError(f"label {spec.label!r} holds NaN or infinite values")
    if spec.task == TaskType.classification and not np.isin(y, (0.0, 1.0)).all():
        found = sorted(set(np.unique(y).tolist()) - {0.0, 1.0})[:5]
        raise TrainingError(f"classification label {spec.label!r} must be 0/1, found {found}")
    return x, y


def check_train_labels(y: np.ndarray, task: TaskType) -> None:
    """A classifier needs two classes or more in its train split."""
    if task != TaskType.regression and len(np.unique(y)) < 2:
        raise TrainingError(f"train split has a single class ({np.unique(y).tolist()}); "
                            "a classifier needs at least two")


def check_test_labels(y: np.ndarray, task: TaskType,
                      classes: list[int | str] | None = None) -> None:
    """A classifier's test split needs every class: ROC AUC (one-vs-rest for multiclass),
    the metric that ranks it against the champion, is undefined without. Checked before
    training, not after it."""
    if task == TaskType.regression:
        return
    expected = len(classes) if classes is not None else 2
    if len(np.unique(y)) < expected:
        metric, _ = primary_metric(task)
        names = classes if classes is not None else [0, 1]
        missing = [c for i, c in enumerate(names) if i not in set(np.unique(y).astype(int))]
        raise TrainingError(
            f"test split lacks class(es) {missing} in its {len(y)} rows: {metric} would be "
            "undefined; the test split is the latest timestamps, so add later rows of those "
            "classes or raise test_fraction")


def run_key(training_path: str, spec: DatasetSpec, settings: ModelSettings) -> str:
    """sha256 of the training file's content, the model settings and the spec."""
    material = {"format": CHECKPOINT_FORMAT, "data": storage.sha256(training_path),
                "settings": settings.model_dump(mode="json"),
                "spec": spec.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def train_model(training_path: str, spec: DatasetSpec, settings: ModelSettings,
                out_dir: str | Path, *, on_epoch_end: Callable[[LoopState], None] | None = None,
                grace_s: float = DEFAULT_GRACE_S) -> TrainResult:
    """Train on a training-set parquet; resume from this run's checkpoint when one exists.

    ``out_dir`` is a folder or an object-store URL (any worker resumes from there). Writes
    ``<out_dir>/checkpoints/<key>/last.pt`` every epoch, and the model and the test split
    under ``<out_dir>/models/<key>/``. ``on_epoch_end`` runs after each checkpoint. SIGTERM
    stops the run at the next batch with a checkpoint and TrainingInterrupted, within
    ``grace_s`` seconds (``mlops.training.preemption``).
    """
    frame = read_training_set(training_path, spec)
    splits = split_by_time(frame, spec, settings)
    encoding = None if spec.plain else learn_encoding(splits[0], spec)
    classes = label_classes(frame, spec)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (frame_to_arrays(s, spec, encoding, classes)
                                                for s in splits)
    check_train_labels(y_tr, spec.task)
    check_test_labels(y_te, spec.task, classes)
    device = resolve_device(settings)
    precision = choose_precision(device)
    key = run_key(training_path, spec, settings)
    root = str(out_dir)
    checkpoint = storage.join(root, "checkpoints", key, "last.pt")
    arch = ModelArch(n_features=x_tr.shape[1], hidden=settings.hidden,
                     dropout=settings.dropout, task=spec.task, feature_names=spec.features,
                     label=spec.label, dataset=spec.name, encoding=encoding,
                     classes=classes, factory=spec.model.factory if spec.model else None,
                     options=spec.model.options if spec.model else {})
    loss = build_loss(spec.model.loss) if spec.model and spec.model.loss else None
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(settings, x_tr.shape[1]))
    seed_everything(settings.seed)
    mlp = _initial_mlp(arch, x_tr, y_tr)
    if arch.factory is not None:  # refused now, not after training, if it cannot serve
        check_network(arch.factory, TorchPredictor(mlp, arch.task), arch.n_features,
                      arch.outputs)
    state = new_loop_state(mlp, settings, device, precision)
    resumed = resume_checkpoint(checkpoint, state, key)

    def after_epoch(current: LoopState) -> None:
        save_checkpoint(checkpoint, current, key)
        if on_epoch_end is not None:
            on_epoch_end(current)

    with preemptible(grace_s) as request:
        fit(state, _tensors(state.mlp, x_tr, y_tr, device),
            _tensors(state.mlp, x_va, y_va, device), settings, spec.task, precision,
            after_epoch, stop=request.requested, loss=loss)
        save_checkpoint(checkpoint, state, key)
        if not state.finished:  # stopped on SIGTERM, between batches
            raise TrainingInterrupted(state.epoch, checkpoint)
    metrics = _split_metrics(state, spec.task, (x_va, y_va), (x_te, y_te))
    baseline = _baseline(arch, (x_tr, y_tr), (x_te, y_te), settings.seed)
    metrics |= baseline.metrics
    model_path = storage.join(root, "models", key, "model.pt")
    test_path = storage.join(root, "models", key, "test.parquet")
    save_model_file(model_path, state.mlp, arch)
    storage.write_parquet(test_path, splits[2])
    name, higher = primary_metric(spec.task)
    seconds = sum(h["seconds"] for h in state.history)
    return TrainResult(
        model_path=model_path, test_path=test_path, checkpoint_path=checkpoint, run_key=key,
        metrics=metrics, primary_metric=name, higher_is_better=higher, device=str(device),
        precision=precision, epochs_run=state.epoch, best_epoch=state.best_epoch,
        resumed_from_epoch=resumed, baseline_model=baseline.model,
        train_rows=len(x_tr), val_rows=len(x_va), test_rows=len(x_te),
        samples_per_second=sum(h["samples"] for h in state.history) / max(seconds, 1e-9))


def read_training_set(path: str, spec: DatasetSpec) -> pd.DataFrame:
    """The feature stage's parquet, with the timestamp as UTC datetimes."""
    if not storage.exists(path):
        raise TrainingError(f"training set not found: {path}")
    try:
        frame = storage.read_parquet(path)
    except storage.unavailable_errors():
        raise  # an outage, not a bad file: the stage reports it and its task retries
    except Exception as exc:  # pyarrow raises several types for unreadable bytes
        raise TrainingError(f"{path}: cannot read training set as parquet: {exc}") from None
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise TrainingError(f"{path}: training set lacks columns {missing}")
    # A label older than every feature value of its entity has no point-in-time features:
    # all null, where a validated row nulls nullable features only.
    required = [c for c in spec.features if c not in spec.nullable]
    unmatched = (frame[required].isna().any(axis=1) if required
                 else frame[spec.features].isna().all(axis=1))
    if unmatched.any():
        log.warning("%s: dropping %d label rows with no feature values at or before their "
                    "timestamp", path, int(unmatched.sum()))
        frame = frame[~unmatched].reset_index(drop=True)
    if len(frame) == 0:
        raise TrainingError(f"{path}: training set has no rows with features")
    if not isinstance(frame[spec.timestamp].dtype, pd.DatetimeTZDtype):
        frame[spec.timestamp] = pd.to_datetime(frame[spec.timestamp], utc=True)
    return frame


def learn_encoding(train: pd.DataFrame, spec: DatasetSpec) -> FeatureEncoding:
    """The train split's encoding of categorical and nullable features."""
    try:
        return fit_encoding(train, spec)
    except EncodingError as exc:
        raise TrainingError(str(exc)) from None


def _initial_mlp(arch: ModelArch, x: np.ndarray, y: np.ndarray) -> MLP:
    """A fresh network carrying the train split's normalisation."""
    mlp = build_mlp(arch)
    mean, std = column_stats(x)
    if arch.task == TaskType.regression:
        target_mean, target_std = column_stats(y[:, None])
        mlp.set_normalisation(mean, std, float(target_mean[0]), float(target_std[0]))
    else:
        mlp.set_normalisation(mean, std)
    return mlp


def _tensors(mlp: MLP, x: np.ndarray, y: np.ndarray,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Device tensors; a regression target is standardised as the loss expects."""
    if mlp.outputs > 1:  # class indices, as cross-entropy takes them
        return (torch.as_tensor(x, device=device),
                torch.as_tensor(y.astype(np.int64), device=device))
    target = (y - float(mlp.target_mean)) / float(mlp.target_std)
    return (torch.as_tensor(x, device=device),
            torch.as_tensor(target.astype(np.float32), device=device))


def _baseline(arch: ModelArch, train: tuple[np.ndarray, np.ndarray],
              test: tuple[np.ndarray, np.ndarray], seed: int) -> BaselineResult:
    """A simple model on the same split and features, so the network's metrics have a
    reference: ``baseline_test_*`` beside ``test_*``."""
    # scikit-learn is imported here: the GPU check, with torch only, never gets this far
    from mlops.training.baseline import fit_baseline

    result = fit_baseline(arch.task, *train, *test, seed=seed,
                          classes=len(arch.classes) if arch.classes else 2)
    log.info("baseline %s: %s in %.1f s", result.model, result.metrics, result.fit_seconds)
    return result


def _split_metrics(state: LoopState, task: TaskType, val: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    metrics = {"val_loss": float(state.best_loss)}
    metrics |= quality_metrics(task, val[1], predict(state.mlp, task, val[0]), "val")
    metrics |= quality_metrics(task, test[1], predict(state.mlp, task, test[0]), "test")
    name, _ = primary_metric(task)
    if name not in metrics:
        raise TrainingError(f"{name} is undefined: the test split holds a single class")
    return metrics
