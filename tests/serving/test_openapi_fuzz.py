"""Schema fuzzing: schemathesis generates requests from the service's own OpenAPI document
(valid and invalid ones, every operation) and sends them to the app, ready, with a real
ONNX model and a real Feast online store; no response may be a 5xx, and each must conform
to the document.

Checks enabled: every built-in OpenAPI check but two. Left out: positive_data_acceptance,
because a request valid for the schema can still be wrong for the model (an empty batch,
a width other than its features, a model name it does not serve, an unknown entity: it
failed on ``{"records": []}``, rightly a 400), and max_response_time (timing is no
contract on a CPU shared with other work). use_after_free, ensure_resource_availability
and ignored_auth run but have little to act on: the service creates no resources and the
document declares no security scheme (the admin token is a header parameter).
A fixed seed and a bounded number of examples (FUZZ_EXAMPLES, default 30 per operation
and mode) keep the run repeatable and short.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from onnx_models import FEATURES
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)
from serving_setup import ADMIN_TOKEN, serving_manager

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.features.online import online_lookup
from mlops.features.training_set import prepare_features
from mlops.serving.app import ServingConfig, create_app

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 30))  # per operation and generation mode
SEED = 20261113
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          missing_required_header, unsupported_method, allow_header_conformance,
          use_after_free, ensure_resource_availability, ignored_auth]


@pytest.fixture(scope="module")
def app(onnx_model: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The service, ready: a model, a feature store for predict-by-entity, an admin token."""
    data_dir = tmp_path_factory.mktemp("feast")
    spec = synthetic_spec(str(data_dir / "panel.parquet"), n_features=len(FEATURES))
    frame = generate_panel(n_entities=12, n_periods=3, seed=5)
    frame.loc[frame.index[-1], "f2"] = np.nan  # one entity with incomplete features
    prepare_features(frame, spec, data_dir)
    config = ServingConfig(max_batch=64, max_body_bytes=256 * 1024, admin_token=ADMIN_TOKEN,
                           entity_lookup=True, access_log=False)
    return create_app(serving_manager(*onnx_model), online_lookup(spec, data_dir), config)


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode,
          statuses: list[tuple[str, int]]) -> None:
    """EXAMPLES generated requests of one mode to one operation, each answer checked."""

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        statuses.append((f"{case.method} {operation.path}", response.status_code))
        assert response.status_code < 500, (case.method, case.path, response.text)

    run()


def test_generated_requests_never_get_a_5xx(app: FastAPI,
                                            api_schema: schemathesis.BaseSchema) -> None:
    """Every operation of the document, valid and invalid requests: checks pass, 0 5xx.

    (Driven with Hypothesis directly: schemathesis' pytest parametrisation reads a pytest
    internal, ``Function._nodeid``, that pytest 9 no longer has.)
    """
    statuses: list[tuple[str, int]] = []
    not_negatable = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()  # raises when the document does not validate
        _fuzz(operation, GenerationMode.POSITIVE, statuses)
        try:
            _fuzz(operation, GenerationMode.NEGATIVE, statuses)
        except Unsatisfiable:  # every input is a string in the URL or headers: none invalid
            not_negatable.add(f"{operation.method.upper()} {operation.path}")
    assert not [op for op in not_negatable if op.startswith("POST /v")], not_negatable
    assert not [entry for entry in statuses if entry[1] >= 500]
    operations = {f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items()
                  for method in ops}
    assert {operation for operation, _ in statuses} == operations
    codes = {status for _, status in statuses}
    assert {200, 400, 401, 404, 422} <= codes, sorted(codes)
