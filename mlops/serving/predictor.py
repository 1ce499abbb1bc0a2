"""A verified ONNX Runtime CPU session of the export contract, and how it is tuned.

Loading hashes the bytes, compares them with the registry's sha256, builds the session
from those same bytes, checks the contract (input ``features`` [batch, n] float32, output
``prediction``, metadata naming the features and the task) and warms it up; only a
predictor that passed all of that is ever served. A model whose metadata holds an
``encoding`` (categorical or nullable features) takes raw values instead: its numbers as
``features`` and its categories as strings, ``categories`` (``mlops.data.encoding``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mlops.data.encoding import CATEGORIES, NUMBERS, FeatureEncoding, raw_inputs

log = logging.getLogger(__name__)
INPUT, OUTPUT = "features", "prediction"
TASKS = ("classification", "multiclass", "regression")
WARM_UP_BATCHES = (1, 8, 64, 256)


class ModelIntegrityError(RuntimeError):
    """The model's sha256 is not the one the registry recorded."""


class ModelContractError(ValueError):
    """The model is not a usable ONNX model of the serving contract."""


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """CPU options: all graph optimisations, one intra-op thread, sequential, no spinning.

    Inference already runs beside the event loop (a micro-batch thread, or a pool of
    request threads), so each call gets one intra-op thread: for a small MLP at batch
    1-64 one thread is faster than two (the hand-off costs more than it saves). Spinning
    would burn the cores the HTTP loop needs. One graph, one model: inter-op parallelism
    has nothing to run. Large batches gain from more: ``threads``.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def read_encoding(session: ort.InferenceSession, meta: dict[str, str]
                  ) -> FeatureEncoding | None:
    """The model's encoding, checked against its raw inputs; None for a model of numbers."""
    if "encoding" not in meta:
        return None
    try:
        encoding = FeatureEncoding.model_validate_json(meta["encoding"])
    except ValueError as exc:
        raise ModelContractError(f"metadata 'encoding' is not a feature encoding: "
                                 f"{str(exc)[:200]}") from None
    expected = [(NUMBERS, "tensor(float)", len(encoding.numeric)),
                (CATEGORIES, "tensor(string)", len(encoding.categorical))]
    expected = [entry for entry in expected if entry[2]]
    found = [(i.name, i.type, i.shape[1] if len(i.shape) == 2 else None)
             for i in session.get_inputs()]
    if found != expected:
        raise ModelContractError(f"model inputs {found} do not match its encoding's {expected}")
    return encoding


def read_contract(session: ort.InferenceSession
                  ) -> tuple[list[str], str, dict[str, str], FeatureEncoding | None]:
    """Feature names, task, metadata and encoding, checked against the export contract."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    meta = dict(session.get_modelmeta().custom_metadata_map)
    encoding = read_encoding(session, meta)
    if encoding is None:
        _check_plain_input(inputs)
    if OUTPUT not in [o.name for o in outputs]:
        raise ModelContractError(f"model has no output {OUTPUT!r}: {[o.name for o in outputs]}")
    try:
        names = json.loads(meta["feature_names"])
    except (KeyError, json.JSONDecodeError):
        raise ModelContractError("metadata 'feature_names' must be a JSON list") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelContractError(f"metadata 'feature_names' must list strings: {names!r}")
    if encoding is not None and encoding.features != names:
        raise ModelContractError(f"encoding features {encoding.features} != {names}")
    width = inputs[0].shape[1]
    if encoding is None and isinstance(width, int) and width != len(names):
        raise ModelContractError(f"input width {width} != {len(names)} feature names")
    task = meta.get("task")
    if task not in TASKS:
        raise ModelContractError(f"metadata 'task' must be one of {', '.join(TASKS)}: {task!r}")
    return names, task, meta, encoding


def read_classes(task: str, meta: dict[str, str]) -> list[int | str] | None:
    """A multiclass model's classes, in the order of its prediction's columns."""
    if task != "multiclass":
        return None
    try:
        classes = json.loads(meta["classes"])
    except (KeyError, json.JSONDecodeError):
        raise ModelContractError("a multiclass model's metadata 'classes' must be a JSON "
                                 "list") from None
    if (not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes)))
            != len(classes) or not all(type(c) in (int, str) for c in classes)):
        raise ModelContractError(f"metadata 'classes' must list two or more distinct integers "
                                 f"or strings: {classes!r}")
    return classes


def _check_plain_input(inputs: list[Any]) -> None:
    if [i.name for i in inputs] != [INPUT] or len(inputs[0].shape) != 2:
        raise ModelContractError(f"model must have one 2-d input {INPUT!r}, has "
                                 f"{[(i.name, i.shape) for i in inputs]}")
    if inputs[0].type != "tensor(float)":
        raise ModelContractError(f"input {INPUT!r} must be float32, is {inputs[0].type}")


class OnnxPredictor:
    """One verified, warmed-up ONNX Runtime CPU session and what the service says about it."""

    def __init__(self, session: ort.InferenceSession, name: str, version: str,
                 sha256: str) -> None:
        self.session, self.name, self.version, self.sha256 = session, name, version, sha256
        self.feature_names, self.task, self.metadata, self.encoding = read_contract(session)
        self.classes = read_classes(self.task, self.metadata)
        self.warm_seconds: dict[int, float] = {}  # batch size -> seconds of one call

    @classmethod
    def load(cls, path: str, expected_sha256: str | None = None, name: str | None = None,
             version: str = "local", threads: int | None = None) -> OnnxPredictor:
        """Load a local file; errors name the file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelContractError(f"cannot read model file {path}: {exc}") from None
        return cls.from_bytes(data, path, expected_sha256, name or Path(path).stem, version,
                              threads)

    @classmethod
    def from_bytes(cls, data: bytes, label: str, expected_sha256: str | None, name: str,
                   version: str, threads: int | None = None) -> OnnxPredictor:
        """Hash, compare, and only then build and warm the session from those same bytes.

        ``label`` names the model in errors (a file path for a local file, the model URI
        for a registry version, so no temporary path reaches a client).
        """
        actual = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.strip().lower():
            raise ModelIntegrityError(
                f"{label}: sha256 {actual} does not match the expected {expected_sha256}")
        if expected_sha256 is None:
            log.warning("serving %s without an expected sha256 (computed %s)", label, actual)
        try:
            session = ort.InferenceSession(data, sess_options=session_options(threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            reason = str(exc).split("\n")[0][:300]
            raise ModelContractError(f"{label} is not a loadable ONNX model: {reason}") from None
        predictor = cls(session, name, version, actual)
        predictor.warm_up()
        log.info("loaded %s version %s (%s, %d features, sha256 %s)", name, version,
                 predictor.task, len(predictor.feature_names), actual)
        return predictor

    def warm_up(self, batches: tuple[int, ...] = WARM_UP_BATCHES) -> None:
        """Run each batch size so that allocation and kernel choice happen before the first
        request (a model that cannot score a zero matrix fails here), then time it: the
        fastest of three runs, so that one preempted run does not count (``rows_within``)."""
        width = len(self.feature_names)
        for rows in batches:
            matrix = np.zeros((rows, width), dtype=np.float32)
            scores = self.predict(matrix)
            if scores.shape != ((rows,) if self.classes is None else (rows, len(self.classes))):
                raise ModelContractError(f"model returned {list(scores.shape)} predictions "
                                         f"for {rows} rows")
            self.warm_seconds[rows] = min(_seconds(self.predict, matrix) for _ in range(3))

    def rows_within(self, budget_s: float) -> int:
        """The largest warm-up batch whose call took at most ``budget_s`` (0: none)."""
        return max((rows for rows, seconds in self.warm_seconds.items()
                    if seconds <= budget_s), default=0)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """One prediction per row of a [batch, n_features] matrix in feature_names order
        (raw values, an object matrix, for a model with an encoding)."""
        if self.encoding is not None:
            if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
                raise ValueError(f"expected shape [batch, {len(self.feature_names)}], "
                                 f"got {list(matrix.shape)}")
            return self._scores(self.session.run([OUTPUT], raw_inputs(matrix, self.encoding))[0])
        features = np.ascontiguousarray(matrix, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(f"expected shape [batch, {len(self.feature_names)}], "
                             f"got {list(features.shape)}")
        return self._scores(self.session.run([OUTPUT], {INPUT: features})[0])

    def _scores(self, output: np.ndarray) -> np.ndarray:
        """[batch] scores, or [batch, classes] probabilities of a multiclass model."""
        return output.reshape(-1) if self.classes is None else output

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "task": self.task,
                "feature_names": self.feature_names, "sha256": self.sha256,
                "label": self.metadata.get("label"), "dataset": self.metadata.get("dataset"),
                **({} if self.classes is None else {"classes": self.classes}),
                **({} if self.encoding is None else {
                    "categorical": self.encoding.categorical,
                    "nullable": self.encoding.nullable})}


def _seconds(call: Any, *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start
