"""Schema fuzzing: schemathesis generates requests from the service's own OpenAPI document
(valid and invalid ones, every operation) and sends them to the app, ready, with a real
ONNX model and a real Feast online store; every built-in check must pass.

Checks: all of schemathesis' built-in checks but max_response_time (timing is no contract
on a CPU shared with other work). Among them positive_data_acceptance, whose default in
4.32.5 lets a valid request also get 3xx, 401, 403, 404, 409, 429 or a 5xx; here a request
valid for the document must get a 2xx, with two exceptions, each for a state of the
service that no request schema can describe:

- ``POST /v1/predict/entity``: 404 for an id the online store does not hold (the document
  cannot list the store's entities) and 422 for an entity whose stored features are
  incomplete (the fixture stores one such entity, on purpose);
- ``POST /admin/rollback``: 409 when no previous version is held (this service has never
  swapped, so there is nothing to roll back to);
- ``/admin/shadow`` and ``/admin/canary``: 409, since this service has no challenger.

negative_data_rejection keeps its default statuses, 5xx dropped (a 5xx is no rejection)
and 413 added: a batch beyond ``max_batch`` is refused as too large, as the document says.

The one rule JSON Schema cannot state: a v2 tensor's ``shape`` must hold exactly as many
values as its ``data``, and per-feature tensors share one batch size (the document says so
in words). ``_shapes_from_data`` keeps generated valid requests true to it: it sets each
tensor's ``shape`` from its ``data`` (dropping values beyond a whole row) before the
request is sent. It also writes integer tensors' values as integer literals: JSON Schema's
``integer`` admits 3.0, which the routes refuse for an integer datatype (the document says
so in words). Valid admin requests carry the admin token (schemathesis' ignored_auth
then checks that the same request without it, or with another token, is refused).

A fixed seed and a bounded number of examples (FUZZ_EXAMPLES, default 30 per operation
and mode) keep the run repeatable and short.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from onnx_models import FEATURES
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from serving_setup import ADMIN_TOKEN, serving_manager

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.features.online import online_lookup
from mlops.features.training_set import prepare_features
from mlops.serving.app import ServingConfig, create_app

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 30))  # per operation and generation mode
SEED = 20261113
MAX_BATCH = 64
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REJECTED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
SCHEMATHESIS = {
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx"]},
               "negative_data_rejection": {"expected-statuses": REJECTED}},
    "operations": [
        {"include-path": "/v1/predict/entity",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 404, 422]}}},
        *({"include-path": path,
           "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 409]}}}
          for path in ("/admin/rollback", "/admin/shadow", "/admin/canary")),
    ],
}


def all_checks() -> list[Any]:
    """Every built-in check but max_response_time."""
    load_all_checks()
    return [check for check in CHECKS.get_all()
            if getattr(check, "__name__", "") != "max_response_time"]


@pytest.fixture(scope="module")
def app(onnx_model: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The service, ready: a model, a feature store for predict-by-entity, an admin token."""
    data_dir = tmp_path_factory.mktemp("feast")
    spec = synthetic_spec(str(data_dir / "panel.parquet"), n_features=len(FEATURES))
    frame = generate_panel(n_entities=12, n_periods=3, seed=5)
    frame.loc[frame.index[-1], "f2"] = np.nan  # one entity with incomplete features
    prepare_features(frame, spec, data_dir)
    config = ServingConfig(max_batch=MAX_BATCH, max_body_bytes=256 * 1024,
                           admin_token=ADMIN_TOKEN, entity_lookup=True, access_log=False)
    return create_app(serving_manager(*onnx_model), online_lookup(spec, data_dir), config)


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=SchemathesisConfig.from_dict(SCHEMATHESIS))
    schema.hooks.register_hook_with_name(_shapes_from_data, "map_case")
    return schema


def _shapes_from_data(context: Any, case: schemathesis.Case) -> schemathesis.Case:
    """A valid infer request's shapes set from its data (see the module docstring)."""
    body = case.body
    valid = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if valid and isinstance(body, dict) and isinstance(body.get("inputs"), list):
        tensors = [t for t in body["inputs"] if isinstance(t, dict) and "data" in t]
        batch = min(_rows(t) for t in tensors) if tensors else 0
        for tensor in tensors:
            _reshape(tensor, batch)
            if tensor["datatype"][0] in "IU":
                tensor["data"] = _integer_literals(tensor["data"])
    return case


def _integer_literals(data: list[Any]) -> list[Any]:
    """Integer tensor values written as integers (3, not 3.0; see the module docstring)."""
    return [_integer_literals(v) if isinstance(v, list) else int(v) for v in data]


def _width(tensor: dict[str, Any]) -> int:
    return len(FEATURES) if tensor["name"] == "features" else 1


def _rows(tensor: dict[str, Any]) -> int:
    data = tensor["data"]
    nested = bool(data) and isinstance(data[0], list)
    return len(data) if nested else len(data) // _width(tensor)


def _reshape(tensor: dict[str, Any], batch: int) -> None:
    """``batch`` rows of the tensor's data, and the shape that says so."""
    data, width = tensor["data"], _width(tensor)
    nested = bool(data) and isinstance(data[0], list)
    tensor["data"] = data[:batch] if nested else data[:batch * width]
    if tensor["name"] == "features" or nested or len(tensor["shape"]) == 2:
        tensor["shape"] = [batch, width]
    else:
        tensor["shape"] = [batch]


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode,
          statuses: list[tuple[GenerationMode, str, int]]) -> None:
    """EXAMPLES generated requests of one mode to one operation, each answer checked."""
    checks = all_checks()
    admin = bool(operation.definition.raw.get("security")) and mode == GenerationMode.POSITIVE

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=checks, headers=ADMIN if admin else None)
        statuses.append((mode, f"{case.method} {operation.path}", response.status_code))
        assert response.status_code < 500, (case.method, case.path, response.text)

    run()


def test_generated_requests_pass_every_check(app: FastAPI,
                                             api_schema: schemathesis.BaseSchema) -> None:
    """Every operation of the document, valid and invalid requests: every check passes.

    (Driven with Hypothesis directly: schemathesis' pytest parametrisation reads a pytest
    internal, ``Function._nodeid``, that pytest 9 no longer has.)
    """
    statuses: list[tuple[GenerationMode, str, int]] = []
    not_negatable = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()  # raises when the document does not validate
        _fuzz(operation, GenerationMode.POSITIVE, statuses)
        try:
            _fuzz(operation, GenerationMode.NEGATIVE, statuses)
        except Unsatisfiable:  # nothing in the request can be made invalid
            not_negatable.add(f"{operation.method.upper()} {operation.path}")
    assert not [op for op in not_negatable if op.startswith("POST /v")], not_negatable
    operations = {f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items()
                  for method in ops}
    assert {operation for _, operation, _ in statuses} == operations
    codes = {status for _, _, status in statuses}
    assert {200, 400, 401, 404, 422} <= codes, sorted(codes)
    accepted = {operation for mode, operation, status in statuses
                if mode == GenerationMode.POSITIVE and status < 300}
    # Valid requests were answered 2xx, but where the store or the state decides.
    assert operations - accepted == {"POST /v1/predict/entity", "POST /admin/rollback",
                                     "GET /admin/shadow", "POST /admin/shadow",
                                     "GET /admin/canary", "POST /admin/canary"}
