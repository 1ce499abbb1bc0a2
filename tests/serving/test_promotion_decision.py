"""Promote or roll back from the live numbers: read from a real service's /metrics under a
canary and a shadow, then judged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from onnx_models import FEATURES, WEIGHTS, write_model
from serving_setup import ADMIN_TOKEN, serving_manager

from benchmarks.synthetic import synthetic_spec
from mlops.config import ConfigError
from mlops.monitoring.promotion import (
    LabelledScore,
    LiveStats,
    PromotionThresholds,
    VariantStats,
    decide,
    labelled_score,
    quantile,
    read_live,
)
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.canary import BUCKETS, bucket
from mlops.serving.model_manager import FileSource, ModelManager
from mlops.serving.predictor import OnnxPredictor

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RECORD = {"records": [dict(zip(FEATURES, [0.5, -1.0, 2.0, 0.1], strict=True))]}


def test_the_live_numbers_of_both_variants_are_read_from_the_service(onnx_model,
                                                                     tmp_path: Path) -> None:
    other = write_model(tmp_path / "challenger.onnx", weights=WEIGHTS * 2)
    challenger = ModelManager(FileSource(other[0], other[1], "synthetic", "4"))
    app = create_app(serving_manager(*onnx_model), None,
                     ServingConfig(admin_token=ADMIN_TOKEN, batch_window_ms=0),
                     challenger=challenger)
    with TestClient(app) as client:
        client.post("/admin/canary", json={"share": 0.5}, headers=ADMIN)
        client.post("/admin/shadow", json={"rate": 1.0}, headers=ADMIN)
        entities = [str(n) for n in range(200)]
        for entity in entities:
            assert client.post("/v1/predict", json=RECORD,
                               headers={"X-Entity-Id": entity}).status_code == 200
        app.state.shadow.drain()
        live = read_live(client.get("/metrics").text, "3", "4")
    canary = sum(bucket(e) < BUCKETS // 2 for e in entities)
    assert (live.challenger.requests, live.champion.requests) == (canary, 200 - canary)
    assert live.challenger.errors == live.champion.errors == 0
    assert 0 < live.champion.p99_s < 1 and 0 < live.challenger.p99_s < 1
    # The shadow scores the champion's calls only (a canary's answer is the challenger's).
    assert live.shadow_agree + live.shadow_disagree == 200 - canary
    assert live.agreement == 1.0  # doubled weights: the same sign, the same label here
    # (p99 of a hundred in-process requests is noise: the latency rule is judged below.)
    assert decide(live, PromotionThresholds(min_requests=50, min_shadow_rows=50,
                                            max_p99_ratio=100)).action == "promote"
    assert decide(live, PromotionThresholds()).action == "wait"  # 500 of each needed


def stats(requests: int = 1000, errors: int = 0, p99_s: float = 0.002,
          version: str = "4") -> VariantStats:
    return VariantStats(version=version, requests=requests, errors=errors, p99_s=p99_s)


@pytest.mark.parametrize(("challenger", "agree", "action", "says"), [
    (stats(), 990, "promote", "agreement 99.0%"),
    (stats(errors=30), 990, "rollback", "error ratio 3.00%"),
    (stats(p99_s=0.003), 990, "rollback", "1.50x the champion's"),
    (stats(), 800, "rollback", "agrees with the champion on 80.0%"),
    (stats(requests=100), 990, "wait", "100 challenger"),
    (stats(requests=100, errors=50), 990, "rollback", "error ratio 50.00%"),
])
def test_a_regression_rolls_back_and_too_little_traffic_waits(challenger, agree, action,
                                                              says) -> None:
    live = LiveStats(champion=stats(version="3"), challenger=challenger, shadow_agree=agree,
                     shadow_disagree=1000 - agree)
    decision = decide(live, PromotionThresholds())
    assert decision.action == action and says in " ".join(decision.reasons), decision


@pytest.mark.parametrize(("labelled", "action", "says"), [
    (LabelledScore(metric="test_auc", higher_is_better=True, rows=400, champion=0.80,
                   challenger=0.82), "promote", "test_auc 0.8200 (champion 0.8000"),
    (LabelledScore(metric="test_auc", higher_is_better=True, rows=400, champion=0.80,
                   challenger=0.78), "rollback", "test_auc 0.7800 vs the champion's 0.8000"),
    (LabelledScore(metric="test_rmse", higher_is_better=False, rows=400, champion=1.0,
                   challenger=1.1), "rollback", "test_rmse 1.1000"),
    (LabelledScore(metric="test_auc", higher_is_better=True, rows=50, champion=0.80,
                   challenger=0.82), "wait", "50 of 200 labelled rows"),
    (None, "promote", "no labels yet"),
])
def test_the_primary_metric_counts_once_labels_arrive(labelled, action, says) -> None:
    live = LiveStats(champion=stats(version="3"), challenger=stats(), shadow_agree=990,
                     shadow_disagree=10)
    decision = decide(live, PromotionThresholds(), labelled)
    assert decision.action == action and says in " ".join(decision.reasons), decision


def test_labelled_rows_score_both_versions(onnx_model, tmp_path: Path) -> None:
    rows = np.random.default_rng(9).normal(size=(400, 4))
    labels = pd.DataFrame(rows, columns=FEATURES)
    labels["label"] = (rows @ WEIGHTS + 0.1 > 0).astype(int)  # the champion's own rule
    worse = write_model(tmp_path / "worse.onnx", weights=WEIGHTS[::-1].copy())
    spec = synthetic_spec("x")
    score = labelled_score(labels, spec, OnnxPredictor.load(str(onnx_model[0]), onnx_model[1]),
                           OnnxPredictor.load(str(worse[0]), worse[1]))
    assert (score.metric, score.rows, score.champion) == ("test_auc", 400, 1.0)
    assert score.challenger < 0.9 and score.loss() > 0.1
    with pytest.raises(ConfigError, match="label"):
        labelled_score(labels.drop(columns="label"), spec, *[OnnxPredictor.load(
            str(onnx_model[0]), onnx_model[1])] * 2)


def test_quantiles_interpolate_within_the_bucket_as_prometheus_does() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.001)
    assert quantile(0.99, buckets) == pytest.approx(0.002 + 0.003 * 0.9)
    assert quantile(0.99, []) is None
    assert quantile(0.99, [(0.001, 0.0), (float("inf"), 10.0)]) == 0.001
