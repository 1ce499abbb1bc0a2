"""ONNX export of a trained model, with a parity check against torch before it is kept.

The contract serving relies on: one input "features" (float32, [batch, n_features] in the
spec's feature order, dynamic batch), one output "prediction" (float32, [batch]: the
probability of class 1 or the regression value; [batch, classes] of probabilities for a
multiclass label, whose classes the metadata lists in that order), and metadata_props
naming the features, task, label, dataset and opset. A dataset with categorical or
nullable features gives a graph that takes raw values instead: "features" (its numbers,
NaN for a null) and "categories" (strings), encoded inside the graph (``encoding_graph``);
its metadata holds the encoding, and parity covers it (ONNX Runtime on raw values, torch on
encoded ones).
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from mlops.atomic_files import sha256_file
from mlops.training.encoding_graph import ENCODED, prepend_encoding

if TYPE_CHECKING:
    import onnx
    import pandas as pd
    from torch import nn

    from mlops.training.model import ModelArch

log = logging.getLogger(__name__)
OPSET = 18
INPUT_NAME = "features"
OUTPUT_NAME = "prediction"


class ExportError(ValueError):
    """Input to the export that cannot be used; the message names the problem."""


class ParityError(ExportError):
    """ONNX Runtime and torch disagree by more than the tolerance."""


class ExportResult(BaseModel):
    """What the export stage hands over."""

    onnx_path: str
    sha256: str
    opset: int
    exporter: str
    max_abs_diff: float
    tolerance: float
    parity_rows: int
    input_name: str
    output_name: str
    export_seconds: float



def export_onnx(model_path: str, test_path: str, out_dir: Path,
                tolerance: float = 1e-4) -> ExportResult:
    """Export ``model_path`` to ``<out_dir>/model.onnx`` if it matches torch on the test split.

    Parity runs ONNX Runtime (CPU) and torch eager on every test row; a larger max abs
    difference than ``tolerance`` raises ParityError and no ONNX file is left behind.
    """
    from mlops.training.model import TorchPredictor, load_model

    if not tolerance >= 0:
        raise ExportError(f"tolerance must be >= 0, got {tolerance}")
    mlp, arch = load_model(model_path)
    frame = read_test_frame(test_path, arch.feature_names)
    features, raw = network_inputs(frame, arch)
    predictor = TorchPredictor(mlp, arch.task).eval()
    started = time.perf_counter()
    proto = to_onnx(predictor, features, arch)
    seconds = time.perf_counter() - started
    target = Path(out_dir) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _save_onnx(proto, tmp)
        diff = check_parity(tmp, predictor, features, tolerance, raw)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s in %.1f s, max abs diff %.2e on %d rows", target, seconds, diff,
             len(features))
    return ExportResult(onnx_path=str(target), sha256=sha256_file(target), opset=OPSET,
                        exporter="dynamo", max_abs_diff=diff, tolerance=tolerance,
                        parity_rows=len(features), input_name=INPUT_NAME,
                        output_name=OUTPUT_NAME, export_seconds=seconds)


def read_test_features(test_path: str, feature_names: list[str]) -> np.ndarray:
    """The test split's features as float32 in the model's order (a local path or an
    object-store URL)."""
    return read_test_frame(test_path, feature_names)[feature_names].to_numpy(dtype=np.float32)


def network_inputs(frame: pd.DataFrame, arch: ModelArch
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The network's float32 input for the rows, and the exported graph's raw inputs."""
    if arch.encoding is None:
        features = frame[arch.feature_names].to_numpy(dtype=np.float32)
        return features, {INPUT_NAME: features}
    from mlops.data.encoding import encode, raw_inputs

    return encode(frame, arch.encoding), raw_inputs(frame, arch.encoding)


def read_test_frame(test_path: str, feature_names: list[str]) -> pd.DataFrame:
    """The test split (a local path or an object-store URL), checked for the features."""
    from mlops.data import storage

    if not storage.exists(test_path):
        raise ExportError(f"test split not found: {test_path}")
    frame = storage.read_parquet(test_path)
    missing = [c for c in feature_names if c not in frame.columns]
    if missing:
        raise ExportError(f"{test_path}: test split lacks feature columns {missing}")
    if len(frame) == 0:
        raise ExportError(f"{test_path}: test split has no rows to check parity on")
    return frame


def to_onnx(predictor: nn.Module, features: np.ndarray, arch: ModelArch) -> onnx.ModelProto:
    """The torch.export-based (dynamo) exporter with a dynamic batch axis, plus metadata."""
    proto = export_program(predictor, features,
                           INPUT_NAME if arch.encoding is None else ENCODED)
    metadata = {"feature_names": json.dumps(arch.feature_names), "task": str(arch.task),
                "label": arch.label, "dataset": arch.dataset, "opset": str(OPSET)}
    if arch.classes is not None:  # the order of the prediction's columns
        metadata["classes"] = json.dumps(arch.classes)
    if arch.encoding is not None:
        proto = prepend_encoding(proto, arch.encoding)
        metadata["encoding"] = arch.encoding.model_dump_json()
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def export_program(predictor: nn.Module, features: np.ndarray, input_name: str
                   ) -> onnx.ModelProto:
    """The torch.export-based (dynamo) exporter's graph of ``predictor``, batch dynamic."""
    import torch

    # The exporter logs one warning per optional op library it skips (torchvision, ...).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    example = torch.as_tensor(features[:8] if len(features) >= 2 else np.repeat(features, 2, 0))
    program = torch.onnx.export(
        predictor, (example,), dynamo=True, opset_version=OPSET, input_names=[input_name],
        output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False, verbose=False,
    )
    return program.model_proto


def _save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    import onnx

    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


def check_parity(onnx_path: str | Path, predictor: nn.Module, features: np.ndarray,
                 tolerance: float, raw: dict[str, np.ndarray] | None = None) -> float:
    """Max abs difference between ONNX Runtime and torch eager; ParityError above tolerance.

    ``raw``: the graph's inputs when it encodes raw values itself (``features`` is then the
    encoded matrix torch sees), so the encoding is inside what parity compares.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], raw or {INPUT_NAME: features})[0]
    with torch.no_grad():
        expected = predictor(torch.as_tensor(features)).numpy()
    if got.shape != expected.shape:
        raise ParityError(f"ONNX output shape {got.shape} differs from torch {expected.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    if not diff <= tolerance:
        raise ParityError(f"ONNX Runtime and torch differ by {diff:.3e} on {len(features)} "
                          f"test rows, above the tolerance {tolerance:.3e}")
    return diff
