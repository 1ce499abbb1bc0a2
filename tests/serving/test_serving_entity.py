"""Predict-by-entity against a real Feast online store built by the features stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from onnx_models import FEATURES, expected_scores
from serving_setup import serving_manager

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.features.online import UnknownEntity, online_lookup
from mlops.features.training_set import prepare_features
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.errors import IncompleteFeatures
from mlops.serving.v1_payloads import entity_matrix

INCOMPLETE = 20  # this entity's latest row has a null f2


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, TestClient]:
    data_dir = tmp_path_factory.mktemp("feast")
    spec = synthetic_spec(str(data_dir / "panel.parquet"), n_features=len(FEATURES))
    frame = generate_panel(n_entities=INCOMPLETE, n_periods=4, seed=3)
    last = frame.index[frame["entity_id"] == INCOMPLETE][-1]
    frame.loc[last, "f2"] = np.nan
    prepare_features(frame, spec, data_dir)
    return frame, online_lookup(spec, data_dir)


@pytest.fixture(scope="module")
def entity_client(panel: tuple[pd.DataFrame, object], onnx_model: tuple[Path, str]) -> TestClient:
    config = ServingConfig(max_batch=50, entity_lookup=True)
    return TestClient(create_app(serving_manager(*onnx_model), panel[1], config))


def _latest(frame: pd.DataFrame, ids: list[int]) -> np.ndarray:
    latest = frame.sort_values("event_timestamp").groupby("entity_id").last()
    return latest.loc[ids, FEATURES].to_numpy()


def test_predict_by_entity_uses_the_latest_stored_features(
        entity_client: TestClient, panel: tuple[pd.DataFrame, object]) -> None:
    ids = [7, 2, 7, 13]
    response = entity_client.post("/v1/predict/entity", json={"entity_ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["entity_ids"] == ids
    expected = expected_scores(_latest(panel[0], ids))
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-5)
    assert body["labels"] == (expected >= 0.5).astype(int).tolist()
    assert body["predictions"][0] == body["predictions"][2]


def test_unknown_entity_is_404_naming_it(entity_client: TestClient) -> None:
    response = entity_client.post("/v1/predict/entity", json={"entity_ids": [1, 999, "x"]})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "999" in detail and "'x'" in detail and "[1," not in detail


@pytest.mark.parametrize("entity_id", ["\u00b2", "\u0661", 2**63, -(2**63) - 1, "9" * 30])
def test_an_id_that_cannot_be_an_int64_key_is_404_naming_it(entity_client: TestClient,
                                                             entity_id: object) -> None:
    """A superscript or Arabic-Indic digit (str.isdigit says yes, int64 keys say no) and ids
    beyond int64 are not in the store: 404 naming them, never a 500."""
    response = entity_client.post("/v1/predict/entity", json={"entity_ids": [1, entity_id]})
    assert response.status_code == 404, response.text
    assert repr(entity_id) in response.json()["detail"]


def test_entity_with_null_stored_feature_is_422(entity_client: TestClient) -> None:
    response = entity_client.post("/v1/predict/entity", json={"entity_ids": [INCOMPLETE]})
    assert response.status_code == 422
    assert f"entity {INCOMPLETE}" in response.json()["detail"]
    assert "'f2'" in response.json()["detail"]


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"entity_ids": []}, 400, "entity_ids is empty"),
    ({"entity_ids": list(range(1, 52))}, 413, "51 ids"),
    ({"entity_ids": [1.5]}, 422, "entity_ids"),
    ({"entity_ids": [True]}, 422, "entity_ids"),
    ({"ids": [1]}, 422, "entity_ids"),
])
def test_bad_entity_requests(entity_client: TestClient, body: dict, status: int,
                             named: str) -> None:
    response = entity_client.post("/v1/predict/entity", json=body)
    assert response.status_code == status
    assert named in response.json()["detail"]


def test_lookup_returns_request_order_and_raises_for_unknown(
        panel: tuple[pd.DataFrame, object]) -> None:
    frame, lookup = panel
    result = lookup([5, 3])
    assert list(result.index) == [5, 3] and list(result.columns) == FEATURES
    np.testing.assert_allclose(result.to_numpy(), _latest(frame, [5, 3]))
    with pytest.raises(UnknownEntity) as info:
        lookup([3, 4242])
    assert info.value.ids == [4242]


def test_entity_matrix_follows_the_model_column_order() -> None:
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    matrix = entity_matrix(values, [7, 8], ["a", "b", "c"], ["c", "a", "b"])
    assert matrix.dtype == np.float32 and matrix.tolist() == [[3, 1, 2], [6, 4, 5]]
    with pytest.raises(RuntimeError, match=r"does not provide model features \['d'\]"):
        entity_matrix(values, [7, 8], ["a", "b", "c"], ["a", "d", "c"])
    values[1, 1] = np.nan
    with pytest.raises(IncompleteFeatures, match="entity 8: stored feature 'b'"):
        entity_matrix(values, [7, 8], ["a", "b", "c"], ["a", "b", "c"])
