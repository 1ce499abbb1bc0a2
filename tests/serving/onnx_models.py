"""ONNX models of the export contract for the serving tests, built with onnx.helper:
a linear layer (sigmoid for classification), with the contract's names and metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = ["f0", "f1", "f2", "f3"]
WEIGHTS = np.array([0.8, -0.5, 0.3, -1.2], dtype=np.float32)
BIAS = 0.1
ModelFactory = Callable[..., tuple[Path, str]]


def write_model(path: Path, features: list[str] = FEATURES, task: str = "classification",
                weights: np.ndarray = WEIGHTS, bias: float = BIAS,
                metadata: dict[str, str] | None = None) -> tuple[Path, str]:
    """An ONNX file of the contract: input 'features' [batch, n] -> output 'prediction' [batch]."""
    w = numpy_helper.from_array(weights.reshape(-1, 1).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat")
    nodes = [helper.make_node("MatMul", ["features", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["logit"])]
    last = "logit"
    if task == "classification":
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["prob"]))
        last = "prob"
    nodes.append(helper.make_node("Reshape", [last, "flat"], ["prediction"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(features)])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])],
        initializer=[w, b, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    props = {"feature_names": json.dumps(features), "task": task, "label": "label",
             "dataset": "synthetic", **(metadata or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def expected_scores(matrix: np.ndarray, task: str = "classification") -> np.ndarray:
    logit = matrix.astype(np.float32) @ WEIGHTS + np.float32(BIAS)
    return 1.0 / (1.0 + np.exp(-logit)) if task == "classification" else logit
