"""Shadow and canary under load on a real service process, judged by the promotion flow on a
real Prefect server and MLflow registry: shadow switched on and off, a canary started and
promoted, the next one rolled back, and not one failed request throughout."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from onnx_models import FEATURES, WEIGHTS
from test_model_lifecycle import Registry

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import Settings
from mlops.features.training_set import prepare_features
from mlops.governance.audit.log import open_audit_log
from mlops.monitoring.promotion import PromotionThresholds, TrialService
from mlops.registry import CHALLENGER, CHAMPION
from mlops.serving.deploy import start_service, stop_service

MODEL = "alpha.synthetic"  # what Registry registers: team alpha's model of the dataset
# Enough for a test's traffic; p99 of a test's few hundred requests is noise, so only the
# errors and the shadow's agreement decide here (decide's own tests judge latency).
QUICK = PromotionThresholds(min_requests=40, min_shadow_rows=40, max_p99_ratio=1000)


class Load:
    """Clients sending varied rows, each with its entity id, until stopped."""

    def __init__(self, url: str, clients: int = 3) -> None:
        rows = np.random.default_rng(5).normal(size=(200, 4)).round(3)
        self.records = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]
        self.url, self.failures, self.versions = url, [], set()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = offset
            while not self._done.is_set():
                n += 3
                try:
                    answer = client.post("/v1/predict", json={"records": [
                        self.records[n % 200]]}, headers={"X-Entity-Id": str(n % 500)})
                    if answer.status_code != 200:
                        self.failures.append(answer.status_code)
                    else:
                        self.versions.add(answer.json()["version"])
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()


def aliases(registry: Registry, **moves: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    for alias, version in moves.items():
        client.set_registered_model_alias(MODEL, alias, version)
    return {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}


def traffic(admin: TrialService, requests: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = admin.observe()
        if min(live.challenger.requests, live.champion.requests,
               live.shadow_agree + live.shadow_disagree) >= requests:
            return
        time.sleep(0.2)
    raise AssertionError(f"not {requests} requests of each variant in 60 s: {live}")


@pytest.fixture
def on_trial(prefect_server: None, tmp_path: Path, port: int, monkeypatch):
    """Version 1 served as champion by a real service process, version 2 its challenger,
    and clients sending traffic."""
    registry = Registry(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", tracking_uri=registry.uri, serve_port=port)
    monkeypatch.setenv("MLOPS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MLOPS_TRACKING_URI", registry.uri)
    monkeypatch.setenv("MLOPS_SERVE_PORT", str(port))
    spec = synthetic_spec(str(tmp_path / "panel.parquet"))
    prepare_features(generate_panel(n_entities=10, n_periods=3), spec, settings.data_dir)
    first, second = registry.register(0.1), registry.register(0.2)  # agree on most rows
    assert aliases(registry, champion=first, challenger=second) == {
        CHAMPION: first, CHALLENGER: second}
    try:
        service = start_service(spec, settings, MODEL)
        assert service.model_version == first
        load = Load(service.url)
        yield {"registry": registry, "settings": settings, "spec": spec, "url": service.url,
               "admin": TrialService.local(settings, MODEL), "load": load,
               "versions": (first, second)}
        load.stop()
    finally:
        stop_service(settings)


@pytest.mark.slow
def test_shadow_canary_promotion_and_rollback_under_load(on_trial: dict,
                                                         tmp_path: Path) -> None:
    from flows.promotion import PromotionParams, promote_challenger

    registry, admin, load = on_trial["registry"], on_trial["admin"], on_trial["load"]
    first, second = on_trial["versions"]
    params = PromotionParams(spec=on_trial["spec"], team="alpha", thresholds=QUICK)
    for rate in (1.0, 0.0, 0.5, 0.0):  # the shadow on and off under load
        admin.set_trial(0.0, rate)
        time.sleep(0.3)

    admin.set_trial(0.5, 1.0)  # a canary of version 2, and the shadow
    traffic(admin, QUICK.min_requests)
    labels = tmp_path / "labels.parquet"  # outcomes arrived: the first model's own rule
    rows = np.random.default_rng(9).normal(size=(300, 4))
    frame = pd.DataFrame(rows, columns=FEATURES)
    frame["label"] = (rows @ WEIGHTS + 0.1 > 0).astype(int)
    frame.to_parquet(labels)
    promoted = promote_challenger(params.model_copy(update={"labels": str(labels)}))
    assert promoted.decision.action == "promote", promoted.decision
    assert "test_auc 1.0000 (champion 1.0000, 300 labelled rows)" in (
        promoted.decision.reasons)
    assert (promoted.champion, promoted.served) == (second, second)
    assert aliases(registry)[CHAMPION] == second
    with open_audit_log(on_trial["settings"]) as log:  # no approval needed: the flow moved it
        assert [(r.actor, r.subject) for r in log.records() if r.action == "alias.moved"] == [
            ("promotion-flow", f"{MODEL}@champion")]
    assert admin.status()["share"] == 0.0
    assert admin.status()["rate"] == 0.0

    third = registry.register(-3.0)  # a challenger that disagrees on most rows
    aliases(registry, champion=second, challenger=third)
    admin.set_trial(0.5, 1.0)
    traffic(admin, QUICK.min_requests)
    rolled = promote_challenger(params)
    assert rolled.decision.action == "rollback", rolled.decision
    assert "agrees with the champion on" in rolled.decision.reasons[0]
    assert aliases(registry)[CHAMPION] == second
    assert admin.status()["share"] == 0.0
    time.sleep(0.5)
    load.stop()
    assert load.failures == []
    assert load.versions == {first, second, third}
    assert httpx.get(f"{on_trial['url']}/v1/model").json()["version"] == second


@pytest.mark.slow
def test_a_team_that_approves_promotes_on_an_approvers_word(on_trial: dict, tmp_path: Path,
                                                            monkeypatch) -> None:
    from flows.promotion import PromotionParams, promote_challenger
    from tests.flows.test_approvals import answer, paused_run

    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump({"teams": [
        {"name": "alpha", "approval": {"required": True, "timeout_s": 300},
         "members": [{"name": "ann", "roles": ["approver"], "credential": "env:ANN"}]}]}))
    monkeypatch.setenv("MLOPS_TEAMS_FILE", str(teams))
    admin, (first, second) = on_trial["admin"], on_trial["versions"]
    admin.set_trial(0.5, 1.0)
    traffic(admin, QUICK.min_requests)
    done: dict = {}
    run = threading.Thread(target=lambda: done.setdefault("result", promote_challenger(
        PromotionParams(spec=on_trial["spec"], team="alpha", thresholds=QUICK))))
    run.start()
    assert aliases(on_trial["registry"])[CHAMPION] == first  # nothing moves unanswered
    answer(paused_run(), True, "ann", "canary looks good")
    run.join(120)
    assert done["result"].decision.action == "promote" and done["result"].served == second
    assert aliases(on_trial["registry"])[CHAMPION] == second
    with open_audit_log(on_trial["settings"]) as log:
        moved = [(r.action, r.actor) for r in log.records()
                 if r.action in ("approval.granted", "alias.moved")]
    assert moved == [("approval.granted", "ann"), ("alias.moved", "ann")]
    on_trial["load"].stop()
    assert on_trial["load"].failures == []
