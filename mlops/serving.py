"""The CPU inference service core: a verified ONNX Runtime predictor and its FastAPI app.

The app is built by a factory from an already loaded predictor (as KServe's model server
and MLflow's scoring server are), so loading, verifying and serving are separate steps.
Typed errors map to status codes in one table (``STATUS_BY_ERROR``); a bad request gets
a 4xx naming the field and row, never a 5xx, and no response carries a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from mlops.features import UnknownEntity

log = logging.getLogger(__name__)
INPUT, OUTPUT = "features", "prediction"
MAX_BATCH = 10_000
THRESHOLD = 0.5
_FLOAT32_MAX = float(np.finfo(np.float32).max)
FeatureLookup = Callable[[list[Any]], pd.DataFrame]


class ModelIntegrityError(RuntimeError):
    """The model file's sha256 is not the one the registry recorded."""


class ModelContractError(ValueError):
    """The model file is not a usable ONNX model of the serving contract."""


class BadInput(ValueError):
    """A request whose content cannot be scored; the message names the row and field."""


class BatchTooLarge(ValueError):
    """More rows than the service accepts in one request."""


class IncompleteFeatures(ValueError):
    """An entity whose stored features hold nulls, so it cannot be scored."""


class NotReady(RuntimeError):
    """No model loaded, or no feature store configured for the route."""


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options for a small CPU box: full graph optimisation, one thread, no spinning.

    Requests run in parallel on the server's thread pool, so each call gets one intra-op
    thread: for a small MLP at batch 1-64 one thread was 15-25% faster here than two
    (thread hand-off costs more than it saves); spinning would burn the request threads'
    cores. Large batches gain from more: pass ``threads``.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def read_contract(session: ort.InferenceSession) -> tuple[list[str], str, dict[str, str]]:
    """Feature names, task and metadata, checked against the export contract."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT] or len(inputs[0].shape) != 2:
        raise ModelContractError(f"model must have one 2-d input {INPUT!r}, has "
                                 f"{[(i.name, i.shape) for i in inputs]}")
    if inputs[0].type != "tensor(float)":
        raise ModelContractError(f"input {INPUT!r} must be float32, is {inputs[0].type}")
    if OUTPUT not in [o.name for o in outputs]:
        raise ModelContractError(f"model has no output {OUTPUT!r}: {[o.name for o in outputs]}")
    meta = dict(session.get_modelmeta().custom_metadata_map)
    try:
        names = json.loads(meta["feature_names"])
    except (KeyError, json.JSONDecodeError):
        raise ModelContractError("metadata 'feature_names' must be a JSON list") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelContractError(f"metadata 'feature_names' must list strings: {names!r}")
    width = inputs[0].shape[1]
    if isinstance(width, int) and width != len(names):
        raise ModelContractError(f"input width {width} != {len(names)} feature names")
    task = meta.get("task")
    if task not in ("classification", "regression"):
        raise ModelContractError(f"metadata 'task' must be classification or regression: {task!r}")
    return names, task, meta


class OnnxPredictor:
    """One verified ONNX Runtime CPU session and what the service reports about it."""

    def __init__(self, session: ort.InferenceSession, name: str, version: str,
                 sha256: str) -> None:
        self.session, self.name, self.version, self.sha256 = session, name, version, sha256
        self.feature_names, self.task, self.metadata = read_contract(session)

    @classmethod
    def load(cls, path: str, expected_sha256: str | None = None, name: str | None = None,
             version: str = "local", threads: int | None = None) -> OnnxPredictor:
        """Hash the bytes, compare, and only then build the session from those same bytes."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelContractError(f"cannot read model file {path}: {exc}") from None
        actual = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.strip().lower():
            raise ModelIntegrityError(
                f"{path}: sha256 {actual} does not match the expected {expected_sha256}")
        if expected_sha256 is None:
            log.warning("serving %s without an expected sha256 (computed %s)", path, actual)
        try:
            session = ort.InferenceSession(data, sess_options=session_options(threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ModelContractError(f"{path} is not a loadable ONNX model: {exc}") from None
        predictor = cls(session, name or Path(path).stem, version, actual)
        predictor.predict(np.zeros((1, len(predictor.feature_names)), dtype=np.float32))
        log.info("loaded %s version %s (%s, %d features, sha256 %s)", predictor.name, version,
                 predictor.task, len(predictor.feature_names), actual)
        return predictor

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """One prediction per row of a [batch, n_features] matrix in feature_names order."""
        features = np.ascontiguousarray(matrix, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(f"expected shape [batch, {len(self.feature_names)}], "
                             f"got {list(features.shape)}")
        return self.session.run([OUTPUT], {INPUT: features})[0].reshape(-1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "task": self.task,
                "feature_names": self.feature_names, "sha256": self.sha256,
                "label": self.metadata.get("label"), "dataset": self.metadata.get("dataset")}


# ---- request parsing (pure) --------------------------------------------------------


def _number(value: Any, row: int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"records[{row}].{name}: {value!r} is not a number")
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise BadInput(f"records[{row}].{name}: {value!r} is not a finite float32 value")
    return float(value)


def records_to_matrix(records: Sequence[Any], feature_names: Sequence[str]) -> np.ndarray:
    """[rows, features] float32 from JSON records; BadInput names the first bad row/field."""
    if not records:
        raise BadInput("records is empty; send at least one record")
    expected = set(feature_names)
    matrix = np.empty((len(records), len(feature_names)), dtype=np.float32)
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadInput(f"records[{row}] must be an object of feature values")
        missing = [name for name in feature_names if name not in record]
        if missing:
            raise BadInput(f"records[{row}]: missing feature(s) {missing}")
        extra = sorted(set(record) - expected)
        if extra:
            raise BadInput(f"records[{row}]: unknown field(s) {extra}")
        matrix[row] = [_number(record[name], row, name) for name in feature_names]
    return matrix


def lookup_matrix(frame: pd.DataFrame, feature_names: Sequence[str]) -> np.ndarray:
    """The model's columns from a feature lookup; entities with null features are refused."""
    absent = [name for name in feature_names if name not in frame.columns]
    if absent:
        raise RuntimeError(f"feature lookup does not provide model features {absent}")
    values = frame[list(feature_names)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise IncompleteFeatures(f"entity {frame.index.tolist()[row]!r}: stored feature "
                                 f"{feature_names[column]!r} has no value")
    return values.astype(np.float32)


# ---- the app -----------------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[Any]


class EntityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_ids: list[StrictInt | StrictStr]


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[float]
    labels: list[int] | None = None
    entity_ids: list[StrictInt | StrictStr] | None = None


STATUS_BY_ERROR: dict[type[Exception], int] = {
    BadInput: 400, UnknownEntity: 404, BatchTooLarge: 413, IncompleteFeatures: 422,
    NotReady: 503,
}


def _error(status: int, request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    if not content_type.split(";")[0].strip().lower().endswith(("/json", "+json")):
        return JSONResponse({"error": "UnsupportedMediaType", "detail":
                             f"Content-Type must be application/json, got {content_type!r}"},
                            status_code=415)
    problems = []
    for err in exc.errors() if isinstance(exc, RequestValidationError) else []:
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if err.get("type") == "json_invalid":
            problems.append(f"body is not valid JSON (JSON decode error at character "
                            f"{'.'.join(loc)}: {err.get('ctx', {}).get('error', '')})")
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
    return JSONResponse({"error": "InvalidRequest", "detail": "; ".join(problems)},
                        status_code=422)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "InternalError", "detail": "internal error"}, status_code=500)


def _respond(predictor: OnnxPredictor, matrix: np.ndarray, **extra: Any) -> PredictResponse:
    scores = predictor.predict(matrix)
    labels = ((scores >= THRESHOLD).astype(int).tolist()
              if predictor.task == "classification" else None)
    return PredictResponse(model=predictor.name, version=predictor.version,
                           predictions=scores.tolist(), labels=labels, **extra)


def create_app(predictor: OnnxPredictor | None, feature_lookup: FeatureLookup | None = None,
               max_batch: int = MAX_BATCH) -> FastAPI:
    """The service around an already loaded predictor (None: alive but not ready).

    Endpoints are plain ``def``: FastAPI runs them in its thread pool, so ONNX Runtime
    (which releases the GIL) and the blocking Feast SQLite read never stall the loop.
    """
    app = FastAPI(title="mlops inference service", version="1")
    for error_type, status in STATUS_BY_ERROR.items():
        app.add_exception_handler(error_type, partial(_error, status))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _internal)

    def loaded() -> OnnxPredictor:
        if predictor is None:
            raise NotReady("no model loaded")
        return predictor

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        if predictor is None:
            return JSONResponse({"status": "not ready", "detail": "no model loaded"}, 503)
        return JSONResponse({"status": "ready", "model": predictor.name,
                             "version": predictor.version})

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        return {**loaded().describe(), "max_batch": max_batch,
                "entity_lookup": feature_lookup is not None}

    @app.post("/v1/predict", response_model_exclude_none=True)
    def predict(body: PredictRequest) -> PredictResponse:
        model = loaded()
        if len(body.records) > max_batch:
            raise BatchTooLarge(f"{len(body.records)} records; at most {max_batch} per request")
        return _respond(model, records_to_matrix(body.records, model.feature_names))

    @app.post("/v1/predict/entity", response_model_exclude_none=True)
    def predict_entity(body: EntityRequest) -> PredictResponse:
        model = loaded()
        if feature_lookup is None:
            raise NotReady("no feature store configured for predict-by-entity")
        if not body.entity_ids:
            raise BadInput("entity_ids is empty; send at least one id")
        if len(body.entity_ids) > max_batch:
            raise BatchTooLarge(f"{len(body.entity_ids)} ids; at most {max_batch} per request")
        matrix = lookup_matrix(feature_lookup(list(body.entity_ids)), model.feature_names)
        return _respond(model, matrix, entity_ids=body.entity_ids)

    return app
