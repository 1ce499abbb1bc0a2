"""The MLP for tabular data, its inference wrapper, and its saved-file format.

Standardisation lives inside the module as buffers (computed on the train split only), so
the exported ONNX graph takes raw feature values and serving needs no preprocessing code.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from mlops.atomic_files import write_atomic
from mlops.config import TaskType
from mlops.data.encoding import FeatureEncoding
from mlops.training.factory import ModelInputs, build_body

log = logging.getLogger(__name__)
MODEL_FORMAT = 1
_MIN_STD = 1e-8


class ModelError(ValueError):
    """A saved model that cannot be loaded or used; the message names the file and problem."""


class ModelArch(BaseModel):
    """What it takes to rebuild the network: architecture plus what its inputs mean."""

    model_config = ConfigDict(extra="forbid")

    n_features: int  # columns of the network's input (the encoded width)
    hidden: list[int]
    dropout: float
    task: TaskType
    feature_names: list[str]
    label: str
    dataset: str
    # How raw features become the network's input; None: numbers only, taken as they are.
    encoding: FeatureEncoding | None = None
    # multiclass: the label's classes, in the order of the network's outputs.
    classes: list[int | str] | None = None
    # A team's own network (module:function) and its options; None: the MLP of ``hidden``.
    factory: str | None = None
    options: dict[str, Any] = {}

    def inputs(self) -> ModelInputs:
        """What a factory is told about the network to build."""
        columns = self.encoding.columns if self.encoding else list(self.feature_names)
        return ModelInputs(n_inputs=self.n_features, n_outputs=self.outputs, task=self.task,
                           feature_names=self.feature_names, input_columns=columns,
                           classes=self.classes, options=self.options)

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.task == TaskType.multiclass else 1


class MLP(nn.Module):
    """The network: standardise, then Linear-ReLU-Dropout blocks, then one output unit (one
    per class for a multiclass label); or, given a ``body`` (a team's own network from its
    factory), standardise and then that body.

    ``forward`` returns the raw output (a logit, or the standardised regression value) of
    shape [batch], or the logits [batch, classes]: that is what the training loss sees.
    """

    def __init__(self, n_features: int, hidden: list[int], dropout: float,
                 outputs: int = 1, body: nn.Module | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden if body is None else []:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.net = body if body is not None else nn.Sequential(*layers,
                                                                nn.Linear(width, outputs))
        self.outputs = outputs
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scaled = (features - self.feature_mean) / self.feature_std
        out = self.net(scaled)
        return out.reshape(-1) if self.outputs == 1 else out  # [batch, 1] -> [batch]

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray,
                          target_mean: float = 0.0, target_std: float = 1.0) -> None:
        """Store feature (and regression target) statistics of the train split."""
        with torch.no_grad():
            self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))
            self.target_mean.fill_(float(target_mean))
            self.target_std.fill_(float(target_std))


class TorchPredictor(nn.Module):
    """Inference and export view: probability of class 1, the probability of each class
    [batch, classes], or the value in original units."""

    def __init__(self, mlp: MLP, task: TaskType) -> None:
        super().__init__()
        self.mlp = mlp
        self.task = task

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.mlp(features)
        if self.task == TaskType.classification:
            return torch.sigmoid(raw)
        if self.task == TaskType.multiclass:
            return torch.softmax(raw, dim=-1)
        return raw * self.mlp.target_std + self.mlp.target_mean


def column_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std; a constant column gets std 1 so it scales to 0, not to NaN."""
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def build_mlp(arch: ModelArch) -> MLP:
    """A fresh network for this architecture (weights from torch's current RNG)."""
    body = None if arch.factory is None else build_body(arch.factory, arch.inputs())
    return MLP(arch.n_features, arch.hidden, arch.dropout, arch.outputs, body)


def save_model(path: str | Path, mlp: MLP, arch: ModelArch) -> None:
    """Write state dict, architecture and normalisation atomically to ``path`` (a local
    path or an object-store URL)."""
    state = {key: value.detach().cpu() for key, value in mlp.state_dict().items()}
    payload: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "arch": arch.model_dump(mode="json"),
        "state_dict": state,
        "normalisation": {
            "feature_mean": state["feature_mean"].tolist(),
            "feature_std": state["feature_std"].tolist(),
            "target_mean": float(state["target_mean"]),
            "target_std": float(state["target_std"]),
        },
    }
    save_torch(payload, path)


def load_model(path: str | Path) -> tuple[MLP, ModelArch]:
    """Read a file written by ``save_model``; the network comes back in eval mode on CPU."""
    data = read_bytes(path)
    if data is None:
        raise ModelError(f"{path}: model file not found")
    try:
        payload = load_torch(data)
        arch = ModelArch.model_validate(payload["arch"])
        mlp = build_mlp(arch)
        mlp.load_state_dict(payload["state_dict"])
    except ModelError:
        raise
    except Exception as exc:  # torch.load and load_state_dict raise many types
        raise ModelError(f"{path}: not a usable model file: {exc}") from None
    return mlp.eval(), arch


# --- files, local or in the object store ---------------------------------------------------
# Checkpoints and models live where any worker can read them: on the production profile in
# the object store. The storage module is imported only for such URLs, so the loop still
# runs where only torch and numpy are installed (the GPU check).

def is_remote(path: str | Path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def save_torch(payload: Any, path: str | Path) -> None:
    """torch.save that no reader sees half-written: a temp file renamed, or one S3 PUT."""
    if not is_remote(path):
        write_atomic(Path(path), lambda tmp: torch.save(payload, tmp))
        return
    from mlops.data import storage

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    storage.write_bytes(str(path), buffer.getvalue())


def read_bytes(path: str | Path) -> bytes | None:
    """A file's bytes, or None when there is none; an object store outage raises."""
    if not is_remote(path):
        return Path(path).read_bytes() if Path(path).is_file() else None
    from mlops.data import storage

    return storage.read_bytes(str(path)) if storage.exists(str(path)) else None


def load_torch(data: bytes) -> Any:
    """What ``save_torch`` wrote, tensors on CPU; plain data and tensors only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@torch.no_grad()
def predict(mlp: MLP, task: TaskType, features: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Predictions in fp32 on the model's device: probability of class 1, of each class,
    or the value."""
    predictor = TorchPredictor(mlp, task).eval()
    device = next(mlp.parameters()).device
    parts = [predictor(torch.as_tensor(features[i:i + batch], device=device)).cpu().numpy()
             for i in range(0, len(features), batch)]
    if not parts:
        return np.zeros((0, mlp.outputs) if mlp.outputs > 1 else (0,), dtype=np.float32)
    return np.concatenate(parts)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given their average rank."""
    positive = np.asarray(y_true) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both classes among the labels")
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(scores))
    ranks = np.empty(len(scores))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc_ovr(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Each class's ROC AUC against the rest, averaged: defined when every class occurs
    among the labels (a macro average over fewer classes would not compare across runs)."""
    classes = proba.shape[1]
    present = np.unique(y_true)
    if len(present) != classes:
        missing = sorted(set(range(classes)) - set(present.astype(int).tolist()))
        raise ValueError(f"ROC AUC one-vs-rest needs every class among the labels; "
                         f"missing class indices {missing}")
    return float(np.mean([roc_auc(y_true == k, proba[:, k]) for k in range(classes)]))


def quality_metrics(task: TaskType, y_true: np.ndarray, y_pred: np.ndarray,
                    prefix: str) -> dict[str, float]:
    """auc (when both classes occur) and accuracy at 0.5; accuracy of the most probable
    class and auc_ovr (when every class occurs) for class indices and [rows, classes]
    probabilities; or rmse and mae."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if task == TaskType.multiclass:
        metrics = {f"{prefix}_accuracy": float(np.mean(y_pred.argmax(axis=1) == y_true))}
        if len(np.unique(y_true)) == y_pred.shape[1]:
            metrics[f"{prefix}_auc_ovr"] = macro_auc_ovr(y_true, y_pred)
        return metrics
    if task == TaskType.regression:
        error = y_pred - y_true
        return {f"{prefix}_rmse": float(np.sqrt(np.mean(error**2))),
                f"{prefix}_mae": float(np.mean(np.abs(error)))}
    metrics = {f"{prefix}_accuracy": float(np.mean((y_pred >= 0.5) == (y_true == 1)))}
    if len(np.unique(y_true)) == 2:
        metrics[f"{prefix}_auc"] = roc_auc(y_true, y_pred)
    return metrics
