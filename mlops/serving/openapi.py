"""The service's OpenAPI document, as strict as its routes, for the model serving now.

FastAPI describes the routes, but the hot routes parse their bodies by hand
(``mlops.serving.body``), so their schemas are added here, and then tightened to what the
routes really accept: the served model's feature names, outputs, name and version, and the
service's ``max_batch``. A request valid for the document is one the routes accept, and a
generated client can trust it; the one rule JSON Schema cannot state (a tensor's ``shape``
must hold as many values as its ``data``, and per-feature tensors share their batch) is
said in the descriptions. The model can be hot-swapped, so the document is rebuilt for
whichever predictor serves when it is next asked for.

The binary tensor data extension (a JSON header followed by raw bytes, its length in
``Inference-Header-Content-Length``) is described in words, not as a media type: its
bodies cannot be checked by a JSON schema. The JSON schema is that of a JSON-only body.

The admin routes declare an HTTP bearer security scheme (``ADMIN_BEARER``), so that
clients and fuzzers know they take ``Authorization: Bearer <admin token>``.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from mlops.data.encoding import FeatureEncoding
from mlops.serving import v2_protocol as v2
from mlops.serving.model_manager import ModelManager, SwapResult
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.tensors import DTYPES, output_names
from mlops.serving.v1_payloads import EntityRequest, PredictRequest

Schema = dict[str, Any]
BODY_MODELS: tuple[type[BaseModel], ...] = (v2.InferRequest, PredictRequest, EntityRequest)
_F32 = float(np.finfo(np.float32).max)
_F16 = float(np.finfo(np.float16).max)
_REF = "#/components/schemas/"
_BINARY_SIZE = ("The binary tensor data extension: the size in bytes of this input's values "
                "after the JSON part (whose length the Inference-Header-Content-Length header "
                "gives), in place of 'data'. Not part of a JSON-only body: leave it out.")
_BINARY_OUTPUT = ("Truthy: every output is answered as binary data (application/octet-stream, "
                  "the JSON part's length in Inference-Header-Content-Length).")
_JSON_ONLY = ("A JSON-only request: every input carries its values in 'data'. With the "
              "binary tensor data extension (not described by this schema) the body is this "
              "JSON, whose inputs may give binary_data_size instead of data, followed by the "
              "raw bytes; without the extension an input without data is refused (400).")
_SHAPE_RULE = ("Not expressible in this schema, and checked by the route (400): 'shape' holds "
               "exactly as many values as 'data' (data flat, or nested exactly to the shape)")


class AdminBearer(HTTPBearer):
    """The admin routes' HTTP bearer security scheme, documented by FastAPI; it hands the
    raw Authorization header to ``app.check_admin``, which decides between 401 and 403."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.headers.get("Authorization")


ADMIN_BEARER = Security(AdminBearer(
    auto_error=False, scheme_name="AdminToken",
    description="The admin token: without one 401 (WWW-Authenticate: Bearer), with another "
                "one 403."))


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is ``model`` (its schema: ``install``)."""
    ref = {"$ref": f"{_REF}{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def install(app: FastAPI, manager: ModelManager, max_batch: int) -> None:
    """Serve the document for the model the manager serves when it is asked for.

    It is rebuilt when the served predictor changes: the manager's listener (kept, and
    called first) drops the cached one, and a document built for another predictor than
    the one serving is never handed out.
    """
    generate = app.openapi
    built_for: list[OnnxPredictor | None] = [None]
    told = manager.listener

    def changed(result: SwapResult, current: OnnxPredictor | None) -> None:
        if told is not None:
            told(result, current)
        app.openapi_schema = None

    def openapi() -> dict[str, Any]:
        predictor = manager.current
        if app.openapi_schema is None or built_for[0] is not predictor:
            app.openapi_schema = document(generate(), predictor, max_batch)
            built_for[0] = predictor
        return app.openapi_schema

    manager.listener = changed
    app.openapi_schema = None
    app.openapi = openapi  # type: ignore[method-assign]


def document(base: dict[str, Any], predictor: OnnxPredictor | None,
             max_batch: int) -> dict[str, Any]:
    """FastAPI's ``base`` document with the body schemas, tightened to the predictor (the
    model-independent limits only, while none serves)."""
    doc = deepcopy(base)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template=_REF + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    _limit_rows(schemas, max_batch)
    if predictor is not None:
        schemas["PredictRequest"]["properties"]["records"]["items"] = _record(
            predictor.feature_names, predictor.encoding)
        schemas.update(infer_schemas(predictor.feature_names, predictor.task, max_batch,
                                     predictor.encoding))
        schemas.pop("RequestInput", None)
        _pin_path_parameters(doc, predictor)
    _binary_responses(doc)
    return doc


def _limit_rows(schemas: dict[str, Schema], max_batch: int) -> None:
    """At least one row, at most ``max_batch`` (beyond it the routes answer 413)."""
    for model, field in (("PredictRequest", "records"), ("EntityRequest", "entity_ids")):
        schemas[model]["properties"][field].update(minItems=1, maxItems=max_batch)


def _record(features: list[str], encoding: FeatureEncoding | None = None) -> Schema:
    if encoding is None:
        return {"type": "object", "additionalProperties": False, "required": list(features),
                "properties": {name: _float32() for name in features},
                "description": "One row: every feature of the model, each a finite float32 "
                               "number, and nothing else."}
    return {"type": "object", "additionalProperties": False, "required": list(features),
            "properties": {name: _raw_value(name, encoding) for name in features},
            "description": "One row: every feature of the model and nothing else; a category "
                           "as a string or an integer code (an unseen one is no error), a "
                           "number as a finite float32, null where the feature is nullable."}


def _raw_value(name: str, encoding: FeatureEncoding) -> Schema:
    kinds: list[Schema] = ([{"type": "string"}, {"type": "integer"}]
                           if name in encoding.categorical else [_float32()])
    if name in encoding.nullable:
        kinds.append({"type": "null"})
    return {"anyOf": kinds}


def _float32() -> Schema:
    return {"type": "number", "minimum": -_F32, "maximum": _F32}


def _values(datatype: str) -> Schema:
    """One JSON value of ``datatype`` as the routes accept it (float types are cast to the
    model's float32, so their values stay within float32's range)."""
    if datatype == "BOOL":
        return {"type": "boolean"}
    if datatype.startswith("FP"):
        limit = _F16 if datatype == "FP16" else _F32
        return {"type": "number", "minimum": -limit, "maximum": limit}
    info = np.iinfo(DTYPES[datatype])
    return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max),
            "description": "An integer literal (3, not 3.0: JSON Schema cannot tell them "
                           "apart, the route refuses 3.0 for an integer datatype)."}


def _data(datatype: str, width: int, rows: int) -> Schema:
    """'data' of one datatype, 1 to ``rows`` rows of ``width`` values: flat or nested."""
    value = _values(datatype)
    flat = {"type": "array", "items": value, "minItems": width, "maxItems": width * rows}
    nested = {"type": "array", "minItems": 1, "maxItems": rows,
              "items": {"type": "array", "items": value, "minItems": width,
                        "maxItems": width}}
    return {"anyOf": [flat, nested]}


def _tensor(name: Schema, shape: Schema, width: int, max_batch: int,
            description: str) -> Schema:
    """An input tensor: its values' schema follows its datatype."""
    by_type = [{"properties": {"datatype": {"const": datatype},
                               "data": _data(datatype, width, max_batch)}}
               for datatype in DTYPES]
    return {"type": "object", "additionalProperties": False, "description": description,
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": name, "shape": shape, "datatype": {"enum": list(DTYPES)},
                "parameters": _parameters({"binary_data_size": {
                    "type": "null", "description": _BINARY_SIZE}}),
                "data": {"description": "Row-major values, flat or nested to the shape. "
                                        "Required in a JSON-only body."}},
            "oneOf": by_type}


def _parameters(documented: dict[str, Schema]) -> Schema:
    return {"anyOf": [{"type": "object", "additionalProperties": True,
                       "properties": documented}, {"type": "null"}]}


def _rows(max_batch: int) -> Schema:
    return {"type": "integer", "minimum": 1, "maximum": max_batch}


def infer_schemas(features: list[str], task: str, max_batch: int,
                  encoding: FeatureEncoding | None = None) -> dict[str, Schema]:
    """InferRequest and its parts for a model of ``features`` and ``task`` (one that
    encodes raw values takes one tensor per feature, a category's as BYTES)."""
    output = {"type": "object", "additionalProperties": False, "required": ["name"],
              "properties": {"name": {"enum": output_names(task)},
                             "parameters": _parameters({"binary_data": {
                                 "description": "Truthy: this output as binary data."}})}}
    request = {"type": "object", "additionalProperties": False, "required": ["inputs"],
               "title": "InferRequest", "description": _JSON_ONLY,
               "properties": {
                   "id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                   "parameters": _parameters({"binary_data_output": {
                       "description": _BINARY_OUTPUT}}),
                   "inputs": (_inputs(features) if encoding is None
                              else _raw_inputs(features)),
                   "outputs": {"anyOf": [{"type": "array", "items": {
                       "$ref": f"{_REF}RequestOutput"}}, {"type": "null"}],
                       "description": "The outputs to answer (all when none is named)."}}}
    tensors = (_tensors(features, max_batch) if encoding is None
               else {"RawFeatureTensor": _raw_tensor(encoding, max_batch)})
    return {"InferRequest": request, "RequestOutput": output, **tensors}


def _raw_inputs(features: list[str]) -> Schema:
    return {"type": "array", "minItems": len(features), "maxItems": len(features),
            "items": {"$ref": f"{_REF}RawFeatureTensor"},
            "allOf": [{"contains": {"properties": {"name": {"const": name}}}}
                      for name in features],
            "description": "One tensor per feature, each feature once, in any order."}


def _raw_tensor(encoding: FeatureEncoding, max_batch: int) -> Schema:
    """One feature's raw values: JSON data only (a category's strings as BYTES), null
    where the feature is nullable."""
    value = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}
    return {"type": "object", "additionalProperties": False,
            "required": ["name", "shape", "datatype", "data"],
            "description": f"One feature: shape [batch] or [batch, 1]; categories "
                           f"{encoding.categorical} as BYTES (strings) or integer codes, "
                           f"numbers finite, null only for {encoding.nullable}.",
            "properties": {
                "name": {"enum": list(encoding.features)},
                "shape": {"type": "array", "prefixItems": [_rows(max_batch), {"const": 1}],
                          "minItems": 1, "maxItems": 2},
                "datatype": {"enum": ["BYTES", *DTYPES]},
                "parameters": _parameters({}),
                "data": {"type": "array", "minItems": 1, "maxItems": max_batch,
                         "items": {"anyOf": [value, {"type": "array", "items": value,
                                                     "minItems": 1, "maxItems": 1}]}}}}


def _inputs(features: list[str]) -> Schema:
    """The one 'features' tensor, or each feature's tensor once, in any order."""
    return {"type": "array", "minItems": 1, "anyOf": [
        {"items": {"$ref": f"{_REF}FeaturesTensor"}, "maxItems": 1},
        {"items": {"$ref": f"{_REF}FeatureTensor"}, "minItems": len(features),
         "maxItems": len(features),
         "allOf": [{"contains": {"properties": {"name": {"const": name}}}}
                   for name in features]}],
        "description": "Either the one 'features' tensor or one tensor per feature, each "
                       "feature once, in any order."}


def _tensors(features: list[str], max_batch: int) -> dict[str, Schema]:
    """FeaturesTensor (shape [batch, n]) and FeatureTensor (shape [batch] or [batch, 1])."""
    width = len(features)
    matrix = _tensor({"const": "features"},
                     {"type": "array", "prefixItems": [_rows(max_batch), {"const": width}],
                      "minItems": 2, "maxItems": 2},
                     width, max_batch,
                     f"All features at once: shape [batch, {width}], columns in the order "
                     f"{features}. {_SHAPE_RULE}.")
    column = _tensor({"enum": list(features)},
                     {"type": "array", "prefixItems": [_rows(max_batch), {"const": 1}],
                      "minItems": 1, "maxItems": 2},
                     1, max_batch,
                     f"One feature: shape [batch] or [batch, 1]. {_SHAPE_RULE}, and every "
                     "per-feature input has the same batch.")
    return {"FeaturesTensor": matrix, "FeatureTensor": column}


def _pin_path_parameters(doc: dict[str, Any], predictor: OnnxPredictor) -> None:
    """The model name and version in v2 paths: the served ones (others are 404s)."""
    served = {"name": predictor.name, "version": predictor.version}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in served:
                    parameter["schema"] = {"type": "string", "title": parameter["name"].title(),
                                           "enum": [served[parameter["name"]]]}


def _binary_responses(doc: dict[str, Any]) -> None:
    """Infer answers binary outputs as application/octet-stream (the binary extension)."""
    for path, operations in doc.get("paths", {}).items():
        if path.endswith("/infer") and "post" in operations:
            ok = operations["post"]["responses"]["200"]
            ok["content"]["application/octet-stream"] = {
                "schema": {"type": "string", "format": "binary",
                           "description": "The JSON response, then each binary output's "
                                          "little-endian bytes, in the order of 'outputs'."}}
            ok["headers"] = {"Inference-Header-Content-Length": {
                "description": "With binary outputs: the JSON part's length in bytes.",
                "schema": {"type": "integer", "minimum": 0}}}
