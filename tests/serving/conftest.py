"""Fixtures of the serving tests: contract ONNX models, a loaded predictor, app clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from onnx_models import ModelFactory, write_model

from mlops.serving import OnnxPredictor, create_app


@pytest.fixture(scope="session")
def model_factory() -> ModelFactory:
    return write_model


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return write_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="session")
def predictor(onnx_model: tuple[Path, str]) -> OnnxPredictor:
    path, sha = onnx_model
    return OnnxPredictor.load(str(path), sha, "synthetic", "3")


@pytest.fixture(scope="module")
def client(predictor: OnnxPredictor) -> TestClient:
    return TestClient(create_app(predictor, None, max_batch=100))


@pytest.fixture(scope="module")
def empty_client() -> TestClient:
    return TestClient(create_app(None, None))
