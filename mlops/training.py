"""Training: a time-ordered split, the seeded loop with per-epoch checkpoints, test metrics.

The pure parts (split, metrics, the loop over tensors) are separate from ``train_model``,
the runner that reads the training set and writes the model, test split and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from mlops.config import DatasetSpec, ModelSettings, TaskType
from mlops.data import sha256_file
from mlops.model import (
    MLP,
    ModelArch,
    atomic_torch_save,
    build_mlp,
    column_stats,
    predict,
    quality_metrics,
)
from mlops.model import save_model as save_model_file

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1
_REL_MIN_GAIN = 1e-4  # a validation loss must improve by this fraction to count as better
_EVAL_BATCH = 8192
_THREADED_MACS = 20_000_000  # multiply-adds per batch above which CPU threads pay off


class TrainingError(ValueError):
    """Training input or settings that cannot be used; the message names the problem."""


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


def primary_metric(task: TaskType) -> tuple[str, bool]:
    """The metric that ranks models of this task, and whether higher is better."""
    return ("test_auc", True) if task == TaskType.classification else ("test_rmse", False)


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

def frame_to_arrays(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, spec order) and label (float32); bad values raise TrainingError."""
    missing = [c for c in [*spec.features, spec.label] if c not in frame.columns]
    if missing:
        raise TrainingError(f"training set lacks columns {missing}")
    try:
        x = frame[spec.features].to_numpy(dtype=np.float32)
        y = frame[spec.label].to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"features and label must be numeric: {exc}") from None
    if not np.isfinite(x).all():
        bad = [c for c, ok in zip(spec.features, np.isfinite(x).all(axis=0), strict=True) if not ok]
        raise TrainingError(f"features hold NaN or infinite values: {bad}")
    if not np.isfinite(y).all():
        raise TrainingError(f"label {spec.label!r} holds NaN or infinite values")
    if spec.task == TaskType.classification and not np.isin(y, (0.0, 1.0)).all():
        found = sorted(set(np.unique(y).tolist()) - {0.0, 1.0})[:5]
        raise TrainingError(f"classification label {spec.label!r} must be 0/1, found {found}")
    return x, y


def check_train_labels(y: np.ndarray, task: TaskType) -> None:
    """A classifier needs both classes in its train split."""
    if task == TaskType.classification and len(np.unique(y)) < 2:
        raise TrainingError(f"train split has a single class ({np.unique(y).tolist()}); "
                            "a classifier needs both 0 and 1")


# --- device and precision -----------------------------------------------------------------

def resolve_device(settings: ModelSettings) -> torch.device:
    """auto: CUDA when available, else CPU; an explicit cuda without one is an error."""
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was requested but CUDA is not available here")
    if settings.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def choose_precision(device: torch.device) -> str:
    """fp32 on CPU; bf16 autocast on CUDA where supported, else fp16 with a grad scaler."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def seed_everything(seed: int) -> None:
    """Seed every RNG the loop may touch (python, numpy, torch CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_threads(settings: ModelSettings, n_features: int) -> int:
    """Intra-op threads for CPU training: one for small batches, where more threads cost
    more in synchronisation than they gain (badly so on a busy 2-core machine), else all."""
    sizes = [n_features, *settings.hidden, 1]
    macs = settings.batch_size * sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    cores = max(1, len(os.sched_getaffinity(0)))
    return 1 if macs < _THREADED_MACS else cores


# --- the loop -----------------------------------------------------------------------------

@dataclass
class LoopState:
    """Everything the loop changes; what a checkpoint saves and restores."""

    mlp: MLP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False


def new_loop_state(mlp: MLP, settings: ModelSettings, device: torch.device,
                   precision: str) -> LoopState:
    """Optimizer, grad scaler (active for fp16 only) and shuffle RNG for a fresh run."""
    mlp.to(device)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=settings.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(settings.seed)
    return LoopState(mlp, optimizer, scaler, generator)


def loss_function(task: TaskType, reduction: str = "mean") -> nn.Module:
    return nn.BCEWithLogitsLoss(reduction=reduction) if task == TaskType.classification \
        else nn.MSELoss(reduction=reduction)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def train_epoch(state: LoopState, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                loss_fn: nn.Module, precision: str) -> float:
    """One pass over the train tensors (already on the device); returns the mean loss."""
    state.mlp.train()
    order = torch.randperm(len(x), generator=state.generator).to(x.device)
    total = torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        with _autocast(x.device, precision):
            loss = loss_fn(state.mlp(x[idx]).float(), y[idx])
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        total += loss.detach() * len(idx)
    return float(total) / len(x)


@torch.no_grad()
def evaluate_loss(mlp: MLP, x: torch.Tensor, y: torch.Tensor, task: TaskType,
                  precision: str) -> float:
    """Mean loss over tensors on the model's device, in eval mode."""
    mlp.eval()
    loss_fn, total = loss_function(task, "sum"), 0.0
    for start in range(0, len(x), _EVAL_BATCH):
        with _autocast(x.device, precision):
            out = mlp(x[start:start + _EVAL_BATCH]).float()
        total += float(loss_fn(out, y[start:start + _EVAL_BATCH]))
    return total / len(x)


def fit(state: LoopState, train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor], settings: ModelSettings, task: TaskType,
        precision: str, on_epoch_end: Callable[[LoopState], None] | None = None) -> LoopState:
    """Train from ``state.epoch`` until max epochs or ``patience`` epochs without gain.

    ``on_epoch_end`` runs after each epoch (the runner checkpoints there). At the end the
    best weights are loaded back and the state is marked finished.
    """
    loss_fn = loss_function(task)
    while not state.finished and state.epoch < settings.epochs \
            and state.bad_epochs < settings.patience:
        started = time.perf_counter()
        train_loss = train_epoch(state, *train, settings.batch_size, loss_fn, precision)
        seconds = time.perf_counter() - started
        val_loss = evaluate_loss(state.mlp, *val, task, precision)
        state.epoch += 1
        _update_best(state, val_loss)
        state.history.append({"epoch": state.epoch, "train_loss": train_loss,
                              "val_loss": val_loss, "seconds": seconds,
                              "samples": float(len(train[0]))})
        log.info("epoch %d: train_loss %.5f val_loss %.5f (%.0f samples/s)", state.epoch,
                 train_loss, val_loss, len(train[0]) / max(seconds, 1e-9))
        if on_epoch_end is not None:
            on_epoch_end(state)
    if state.best_state is not None:
        state.mlp.load_state_dict(state.best_state)
    state.finished = True
    return state


def _update_best(state: LoopState, val_loss: float) -> None:
    needed = _REL_MIN_GAIN * abs(state.best_loss) if math.isfinite(state.best_loss) else 0.0
    if val_loss < state.best_loss - needed:
        state.best_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
        state.best_state = {k: v.detach().clone() for k, v in state.mlp.state_dict().items()}
    else:
        state.bad_epochs += 1


# --- checkpoints --------------------------------------------------------------------------

def run_key(training_path: str, spec: DatasetSpec, settings: ModelSettings) -> str:
    """sha256 of the training file's content, the model settings and the spec."""
    material = {"format": CHECKPOINT_FORMAT, "data": sha256_file(training_path),
                "settings": settings.model_dump(mode="json"),
                "spec": spec.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, state: LoopState, key: str) -> None:
    """Write everything needed to continue bit-for-bit, atomically."""
    nprng = np.random.get_state(legacy=False)
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(), "shuffle": state.generator.get_state(),
        "python": random.getstate(), "numpy_key": nprng["state"]["key"].tolist(),
        "numpy_pos": int(nprng["state"]["pos"]), "numpy_gauss": [nprng["has_gauss"],
                                                                nprng["gauss"]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT, "run_key": key, "epoch": state.epoch,
        "model": state.mlp.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(), "best_loss": state.best_loss,
        "best_epoch": state.best_epoch, "best_state": state.best_state,
        "bad_epochs": state.bad_epochs, "history": state.history,
        "finished": state.finished, "rng": rng,
    }, path)


def resume_checkpoint(path: Path, state: LoopState, key: str) -> int | None:
    """Load a checkpoint of this run into ``state``; returns its epoch, or None if none.

    An unreadable or foreign file is ignored (the run starts over); one of this run that
    cannot be applied raises, since the state may be half-restored by then.
    """
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("run_key") != key or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("it belongs to another run or format")
    except Exception as exc:  # torch.load raises many types for a damaged file
        log.warning("ignoring checkpoint %s: %s", path, exc)
        return None
    try:
        state.mlp.load_state_dict(payload["model"])
        state.optimizer.load_state_dict(payload["optimizer"])
        if state.scaler.is_enabled() and payload["scaler"]:  # fp16 on both sides
            state.scaler.load_state_dict(payload["scaler"])
        for name in ("epoch", "best_loss", "best_epoch", "best_state", "bad_epochs",
                     "history", "finished"):
            setattr(state, name, payload[name])
        _restore_rng(payload["rng"], state.generator)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise TrainingError(f"checkpoint {path} cannot be applied: {exc}; delete it to "
                            "start this run over") from None
    log.info("resuming from %s at epoch %d", path, state.epoch)
    return state.epoch


def _restore_rng(rng: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["shuffle"])
    random.setstate(rng["python"])
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": rng["numpy_gauss"][0],
                         "gauss": rng["numpy_gauss"][1],
                         "state": {"key": np.array(rng["numpy_key"], dtype=np.uint32),
                                   "pos": rng["numpy_pos"]}})
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# --- the runner ---------------------------------------------------------------------------

def train_model(training_path: str, spec: DatasetSpec, settings: ModelSettings, out_dir: Path,
                *, on_epoch_end: Callable[[LoopState], None] | None = None) -> TrainResult:
    """Train on a training-set parquet; resume from this run's checkpoint when one exists.

    Writes ``<out_dir>/checkpoints/<key>/last.pt`` every epoch, and the model and the test
    split under ``<out_dir>/models/<key>/``. ``on_epoch_end`` runs after each checkpoint.
    """
    frame = read_training_set(training_path, spec)
    splits = split_by_time(frame, spec, settings)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (frame_to_arrays(s, spec) for s in splits)
    check_train_labels(y_tr, spec.task)
    device = resolve_device(settings)
    precision = choose_precision(device)
    key = run_key(training_path, spec, settings)
    checkpoint = Path(out_dir) / "checkpoints" / key / "last.pt"
    arch = ModelArch(n_features=len(spec.features), hidden=settings.hidden,
                     dropout=settings.dropout, task=spec.task, feature_names=spec.features,
                     label=spec.label, dataset=spec.name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(settings, len(spec.features)))
    seed_everything(settings.seed)
    state = new_loop_state(_initial_mlp(arch, x_tr, y_tr), settings, device, precision)
    resumed = resume_checkpoint(checkpoint, state, key)

    def after_epoch(current: LoopState) -> None:
        save_checkpoint(checkpoint, current, key)
        if on_epoch_end is not None:
            on_epoch_end(current)

    fit(state, _tensors(state.mlp, x_tr, y_tr, device), _tensors(state.mlp, x_va, y_va, device),
        settings, spec.task, precision, after_epoch)
    save_checkpoint(checkpoint, state, key)
    metrics = _split_metrics(state, spec.task, (x_va, y_va), (x_te, y_te))
    run_dir = Path(out_dir) / "models" / key
    save_model_file(run_dir / "model.pt", state.mlp, arch)
    write_parquet_atomic(splits[2], run_dir / "test.parquet")
    name, higher = primary_metric(spec.task)
    seconds = sum(h["seconds"] for h in state.history)
    return TrainResult(
        model_path=str(run_dir / "model.pt"), test_path=str(run_dir / "test.parquet"),
        checkpoint_path=str(checkpoint), run_key=key, metrics=metrics, primary_metric=name,
        higher_is_better=higher, device=str(device), precision=precision,
        epochs_run=state.epoch, best_epoch=state.best_epoch, resumed_from_epoch=resumed,
        train_rows=len(x_tr), val_rows=len(x_va), test_rows=len(x_te),
        samples_per_second=sum(h["samples"] for h in state.history) / max(seconds, 1e-9))


def read_training_set(path: str, spec: DatasetSpec) -> pd.DataFrame:
    """The feature stage's parquet, with the timestamp as UTC datetimes."""
    if not Path(path).is_file():
        raise TrainingError(f"training set not found: {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for unreadable bytes
        raise TrainingError(f"{path}: cannot read training set as parquet: {exc}") from None
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise TrainingError(f"{path}: training set lacks columns {missing}")
    # A label older than every feature value of its entity has no point-in-time features.
    unmatched = frame[spec.features].isna().any(axis=1)
    if unmatched.any():
        log.warning("%s: dropping %d label rows with no feature values at or before their "
                    "timestamp", path, int(unmatched.sum()))
        frame = frame[~unmatched].reset_index(drop=True)
    if len(frame) == 0:
        raise TrainingError(f"{path}: training set has no rows with features")
    if not isinstance(frame[spec.timestamp].dtype, pd.DatetimeTZDtype):
        frame[spec.timestamp] = pd.to_datetime(frame[spec.timestamp], utc=True)
    return frame


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write parquet to a temp name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    target = (y - float(mlp.target_mean)) / float(mlp.target_std)
    return (torch.as_tensor(x, device=device),
            torch.as_tensor(target.astype(np.float32), device=device))


def _split_metrics(state: LoopState, task: TaskType, val: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    metrics = {"val_loss": float(state.best_loss)}
    metrics |= quality_metrics(task, val[1], predict(state.mlp, task, val[0]), "val")
    metrics |= quality_metrics(task, test[1], predict(state.mlp, task, test[0]), "test")
    name, _ = primary_metric(task)
    if name not in metrics:
        raise TrainingError(f"{name} is undefined: the test split holds a single class")
    return metrics
