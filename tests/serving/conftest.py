"""Fixtures of the serving tests: contract ONNX models, a loaded predictor, app clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from onnx_models import ModelFactory, write_model
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.app import ServingConfig, create_app
from mlops.serving.model_manager import FileSource, ModelManager
from mlops.serving.predictor import OnnxPredictor


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


@pytest.fixture(scope="module", params=[2.0, 0.0], ids=["micro-batching", "direct"])
def client(request: pytest.FixtureRequest, onnx_model: tuple[Path, str]) -> TestClient:
    """The app on both inference runners: every contract holds with and without batching."""
    config = ServingConfig(max_batch=100, max_body_bytes=64 * 1024, admin_token=ADMIN_TOKEN,
                           batch_window_ms=request.param)
    return TestClient(create_app(serving_manager(*onnx_model), None, config))


@pytest.fixture(scope="module")
def empty_client(onnx_model: tuple[Path, str]) -> TestClient:
    """Alive, but its manager has not loaded a model yet."""
    return TestClient(create_app(ModelManager(FileSource(onnx_model[0], onnx_model[1],
                                                         "synthetic", "3"))))
