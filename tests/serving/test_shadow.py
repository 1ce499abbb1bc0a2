"""The challenger in shadow: scored off the request path on a share of the champion's calls,
agreement and latency as metrics, switched on and off by an admin without a failed
request, and refused when it cannot score the champion's rows."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx_models import BIAS, FEATURES, WEIGHTS, expected_scores, write_model
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.app import ServingConfig, create_app
from mlops.serving.model_manager import FileSource, ModelManager
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.shadow import agreement

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROWS = np.random.default_rng(3).normal(size=(200, 4)).astype(np.float32)


def challenger_manager(path: Path, sha: str) -> ModelManager:
    return ModelManager(FileSource(path, sha, "synthetic", "challenger"))


def metric(client: TestClient, line: str) -> float:
    text = client.get("/metrics").text
    found = [row for row in text.splitlines() if row.startswith(line + " ")]
    assert found, f"{line} not in /metrics"
    return float(found[0].rsplit(" ", 1)[1])


@pytest.fixture
def shadowed(onnx_model, tmp_path: Path):
    """The champion, and a challenger that flips the sign of one weight (some labels
    change) in shadow."""
    weights = WEIGHTS.copy()
    weights[0] = -weights[0]
    other = write_model(tmp_path / "challenger.onnx", weights=weights)
    config = ServingConfig(admin_token=ADMIN_TOKEN, batch_window_ms=0)
    app = create_app(serving_manager(*onnx_model), None, config,
                     challenger=challenger_manager(*other))
    with TestClient(app) as client:
        yield client, app, weights


def predict(client: TestClient, rows: np.ndarray) -> list[float]:
    body = {"records": [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]}
    answer = client.post("/v1/predict", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def test_agreement_and_latency_of_the_challenger_are_measured(shadowed) -> None:
    client, app, weights = shadowed
    assert metric(client, 'mlops_shadow_calls_total{outcome="scored"}') == 0
    answer = client.post("/admin/shadow", json={"rate": 1.0}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["challenger"] == "challenger" and answer.json()["rate"] == 1.0
    for chunk in np.array_split(ROWS, 10):
        predictions = predict(client, chunk)
        # Clients get the champion's answers, whatever the challenger says.
        np.testing.assert_allclose(predictions, expected_scores(chunk), rtol=1e-5)
    app.state.shadow.drain()
    champion = expected_scores(ROWS) >= 0.5
    challenger = 1 / (1 + np.exp(-(ROWS @ weights + BIAS))) >= 0.5
    agree = int(np.count_nonzero(champion == challenger))
    assert 0 < agree < len(ROWS)  # the flipped weight changes some labels, not all
    rows = 'mlops_shadow_rows_total{challenger="challenger",outcome="%s"}'
    assert metric(client, rows % "agree") == agree
    assert metric(client, rows % "disagree") == len(ROWS) - agree
    assert metric(client, 'mlops_shadow_calls_total{outcome="scored"}') == 10
    assert metric(client, "mlops_shadow_inference_duration_seconds_count") >= 1
    assert metric(client, 'mlops_shadow_rate{challenger="challenger"}') == 1.0


def test_switching_the_shadow_on_and_off_under_load_fails_no_request(shadowed) -> None:
    client, app, _ = shadowed
    failures, done = [], threading.Event()

    def load() -> None:
        while not done.is_set():
            answer = client.post("/v1/predict", json={"records": [
                dict(zip(FEATURES, map(float, ROWS[0]), strict=True))]})
            if answer.status_code != 200:
                failures.append(answer.status_code)

    clients = [threading.Thread(target=load) for _ in range(4)]
    for thread in clients:
        thread.start()
    for rate in (1.0, 0.0, 0.5, 0.0, 1.0, 0.0):
        assert client.post("/admin/shadow", json={"rate": rate}, headers=ADMIN).status_code == 200
    done.set()
    for thread in clients:
        thread.join()
    assert failures == []
    app.state.shadow.drain()
    assert metric(client, 'mlops_shadow_calls_total{outcome="failed"}') == 0


def test_a_challenger_that_cannot_score_the_rows_is_refused(onnx_model, tmp_path) -> None:
    other = write_model(tmp_path / "wider.onnx", features=[*FEATURES, "extra"],
                        weights=np.ones(5))
    app = create_app(serving_manager(*onnx_model), None,
                     ServingConfig(admin_token=ADMIN_TOKEN),
                     challenger=challenger_manager(*other))
    with TestClient(app) as client:
        answer = client.post("/admin/shadow", json={"rate": 1.0}, headers=ADMIN)
        assert answer.status_code == 409 and "cannot score the same rows" in answer.text
        assert client.get("/admin/shadow", headers=ADMIN).json()["rate"] == 0.0
        assert client.post("/admin/shadow", json={"rate": 2}, headers=ADMIN).status_code == 422
        assert client.post("/admin/shadow", json={"rate": 1}).status_code == 401


def test_a_service_without_a_challenger_says_so(client: TestClient) -> None:
    answer = client.post("/admin/shadow", json={"rate": 1.0}, headers=ADMIN)
    assert answer.status_code == 409 and "no challenger" in answer.text


@pytest.mark.parametrize(("task", "champion", "challenger", "agrees"), [
    ("classification", [0.2, 0.6, 0.9], [0.4, 0.4, 0.8], [True, False, True]),
    ("regression", [10.0, -2.0, 0.0], [10.4, -2.5, 0.0], [True, False, True]),
])
def test_agreement_is_the_same_label_or_a_close_value(predictor: OnnxPredictor, task,
                                                      champion, challenger, agrees) -> None:
    judged = predictor if task == "classification" else _as_regression(predictor)
    assert agreement(judged, np.array(champion), np.array(challenger)).tolist() == agrees


def _as_regression(predictor: OnnxPredictor) -> OnnxPredictor:
    import copy

    regression = copy.copy(predictor)
    regression.task = "regression"
    return regression
