"""The torch training loop: device and precision, seeded epochs with mixed precision on
CUDA, early stopping on validation loss, a stop between batches when asked (preemption),
and checkpoints that resume a preempted run from that batch.

It works on tensors only; ``mlops.training.train`` reads the data and calls it.
"""

from __future__ import annotations

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
import torch
from torch import nn

from mlops.config import ModelSettings, TaskType
from mlops.training.model import MLP, load_torch, read_bytes, save_torch

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 2  # 2: the position inside an interrupted epoch
_REL_MIN_GAIN = 1e-4  # a validation loss must improve by this fraction to count as better
_EVAL_BATCH = 8192
_THREADED_MACS = 20_000_000  # multiply-adds per batch above which CPU threads pay off


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainingError(ValueError):
    """Training input or settings that cannot be used; the message names the problem."""

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
class EpochProgress:
    """Where an epoch stopped between batches stands: its shuffle order, next batch, the
    summed loss and the seconds so far; the rest of it runs after a resume."""

    order: torch.Tensor  # on the CPU
    next_start: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0


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
    progress: EpochProgress | None = None  # set while an epoch is interrupted


def new_loop_state(mlp: MLP, settings: ModelSettings, device: torch.device,
                   precision: str) -> LoopState:
    """Optimizer, grad scaler (active for fp16 only) and shuffle RNG for a fresh run."""
    mlp.to(device)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=settings.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(settings.seed)
    return LoopState(mlp, optimizer, scaler, generator)


def loss_function(task: TaskType, reduction: str = "mean") -> nn.Module:
    """Binary cross-entropy on the logit, cross-entropy on the class logits (targets are
    class indices), or squared error on the standardised value."""
    if task == TaskType.classification:
        return nn.BCEWithLogitsLoss(reduction=reduction)
    if task == TaskType.multiclass:
        return nn.CrossEntropyLoss(reduction=reduction)
    return nn.MSELoss(reduction=reduction)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def _never() -> bool:
    return False


def train_epoch(state: LoopState, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                loss_fn: Loss, precision: str,
                stop: Callable[[], bool] = _never) -> float | None:
    """One pass over the train tensors (already on the device), or the rest of an
    interrupted one; returns the mean loss. When ``stop()`` says so before a batch, returns
    None with ``state.progress`` saying where the epoch stands."""
    state.mlp.train()
    progress = state.progress or EpochProgress(torch.randperm(len(x), generator=state.generator))
    order = progress.order.to(x.device)
    total = torch.zeros((), device=x.device)
    for start in range(progress.next_start, len(x), batch_size):
        if stop():
            state.progress = EpochProgress(progress.order, start,
                                           progress.loss_sum + float(total), progress.seconds)
            return None
        idx = order[start:start + batch_size]
        with _autocast(x.device, precision):
            loss = loss_fn(state.mlp(x[idx]).float(), y[idx])
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        total += loss.detach() * len(idx)
    state.progress = None
    return (progress.loss_sum + float(total)) / len(x)


@torch.no_grad()
def evaluate_loss(mlp: MLP, x: torch.Tensor, y: torch.Tensor, task: TaskType,
                  precision: str, loss: Loss | None = None) -> float:
    """Mean loss over tensors on the model's device, in eval mode (``loss``: a spec's own,
    which returns each chunk's mean)."""
    mlp.eval()
    loss_fn, total = loss_function(task, "sum"), 0.0
    for start in range(0, len(x), _EVAL_BATCH):
        with _autocast(x.device, precision):
            out = mlp(x[start:start + _EVAL_BATCH]).float()
        target = y[start:start + _EVAL_BATCH]
        total += (float(loss_fn(out, target)) if loss is None
                  else float(loss(out, target)) * len(target))
    return total / len(x)


def fit(state: LoopState, train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor], settings: ModelSettings, task: TaskType,
        precision: str, on_epoch_end: Callable[[LoopState], None] | None = None,
        stop: Callable[[], bool] = _never, loss: Loss | None = None) -> LoopState:
    """Train from ``state.epoch`` (and ``state.progress``) until max epochs or ``patience``
    epochs without gain, or until ``stop()`` asks before a batch.

    ``on_epoch_end`` runs after each epoch (the runner checkpoints there). At the end the
    best weights are loaded back and the state is marked finished; a stopped run returns
    unfinished, with ``state.progress`` set, for the runner to checkpoint. ``loss``: the
    spec's own (outputs, targets) -> batch mean, instead of the task's.
    """
    loss_fn = loss or loss_function(task)
    while not state.finished and state.epoch < settings.epochs \
            and state.bad_epochs < settings.patience:
        started = time.perf_counter() - (state.progress.seconds if state.progress else 0.0)
        train_loss = train_epoch(state, *train, settings.batch_size, loss_fn, precision, stop)
        seconds = time.perf_counter() - started
        if train_loss is None:  # stopped between batches
            return _stopped(state, seconds)
        val_loss = evaluate_loss(state.mlp, *val, task, precision, loss)
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


def _stopped(state: LoopState, seconds: float) -> LoopState:
    """An unfinished state whose progress counts the interrupted epoch's seconds so far."""
    if state.progress is not None:
        state.progress.seconds = seconds
    return state


def _update_best(state: LoopState, val_loss: float) -> None:
    needed = _REL_MIN_GAIN * abs(state.best_loss) if math.isfinite(state.best_loss) else 0.0
    if val_loss < state.best_loss - needed:
        state.best_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
        state.best_state = {k: v.detach().clone() for k, v in state.mlp.state_dict().items()}
    else:
        state.bad_epochs += 1


# --- checkpoints --------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state: LoopState, key: str) -> None:
    """Write everything needed to continue bit-for-bit, atomically (a local path or an
    object-store URL)."""
    nprng = np.random.get_state(legacy=False)
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(), "shuffle": state.generator.get_state(),
        "python": random.getstate(), "numpy_key": nprng["state"]["key"].tolist(),
        "numpy_pos": int(nprng["state"]["pos"]), "numpy_gauss": [nprng["has_gauss"],
                                                                nprng["gauss"]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    progress = state.progress
    save_torch({
        "format": CHECKPOINT_FORMAT, "run_key": key, "epoch": state.epoch,
        "model": state.mlp.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(), "best_loss": state.best_loss,
        "best_epoch": state.best_epoch, "best_state": state.best_state,
        "bad_epochs": state.bad_epochs, "history": state.history,
        "finished": state.finished, "rng": rng,
        "progress": None if progress is None else {
            "order": progress.order, "next_start": progress.next_start,
            "loss_sum": progress.loss_sum, "seconds": progress.seconds},
    }, path)


def resume_checkpoint(path: str | Path, state: LoopState, key: str) -> int | None:
    """Load a checkpoint of this run into ``state``; returns its epoch, or None if none.

    An unreadable or foreign file is ignored (the run starts over); one of this run that
    cannot be applied raises, since the state may be half-restored by then. An object
    store that does not answer raises too: starting over would overwrite the checkpoint.
    """
    data = read_bytes(path)
    if data is None:
        return None
    try:
        payload = load_torch(data)
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
        state.progress = _progress(payload["progress"])
        _restore_rng(payload["rng"], state.generator)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise TrainingError(f"checkpoint {path} cannot be applied: {exc}; delete it to "
                            "start this run over") from None
    log.info("resuming from %s at epoch %d%s", path, state.epoch,
             f", batch row {state.progress.next_start}" if state.progress else "")
    return state.epoch


def _progress(saved: dict[str, Any] | None) -> EpochProgress | None:
    if saved is None:
        return None
    return EpochProgress(saved["order"], int(saved["next_start"]), float(saved["loss_sum"]),
                         float(saved["seconds"]))


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
