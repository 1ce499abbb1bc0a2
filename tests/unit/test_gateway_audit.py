"""The gateway's audit records, on the real Starlette app with a local audit trail: every 401
and 403 is recorded (and read back with `mlops audit show`), never with headers, query or
body; a refusal stays a refusal when the trail is down; a teams-file change is recorded
before it is written, and not written (503) when the trail cannot record it. No call here
reaches Prefect (the upstream is a closed port): run triggers, which need the server, are
in tests/flows/test_gateway_audit_triggers.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from flows.cli import main as cli
from infra.gateway import refusals
from infra.gateway.app import GatewayConfig, create_app
from infra.gateway.audit import parameters_hash, run_parameters
from infra.gateway.ownership import DeploymentInfo
from mlops.config import Settings
from mlops.governance.audit.log import audit_file, open_audit_log
from mlops.governance.audit.records import AuditQuery, AuditRecord

TEAMS_YAML = """\
platform:
  admins:
    - {name: ops, credential: "env:MLOPS_SECRET_OPS"}
  service_accounts:
    - {name: fairshare-controller, role: controller,
       credential: "env:MLOPS_SECRET_FAIRSHARE_CONTROLLER"}
pools:
  gpu: {capacity: 2, type: process}
teams:
  - name: alpha
    weight: 1
    priority: 1
    quotas: {gpu: 1}
    members:
      - {name: viv, roles: [viewer], credential: "env:MLOPS_SECRET_VIV"}
      - {name: rui, roles: [runner], credential: "env:MLOPS_SECRET_RUI"}
  - name: beta
    weight: 1
    priority: 2
    quotas: {gpu: 1}
    members:
      - {name: bo, roles: [runner], credential: "env:MLOPS_SECRET_BO"}
  - name: default
    weight: 1
    priority: 3
    quotas: {gpu: 0}
"""
ENVIRON = {f"MLOPS_SECRET_{name.upper().replace('-', '_')}": f"{name}-secret"
           for name in ("ops", "fairshare-controller", "viv", "rui", "bo")}
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing a refused or audited call reaches


def bearer(name: str, secret: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}:{secret or f'{name}-secret'}"}


def local_settings(data_dir: Path) -> Settings:
    return Settings(profile="local", data_dir=data_dir, audit_key=None)


@contextmanager
def gateway(tmp_path: Path, upstream: str = CLOSED_PORT) -> Iterator[TestClient]:
    """The gateway app over a teams file in ``tmp_path`` and the local audit trail of
    ``tmp_path/data``, started (its lifespan adds the refusal hook) and stopped."""
    teams = tmp_path / "teams.yaml"
    if not teams.exists():
        teams.write_text(TEAMS_YAML)
    audit = open_audit_log(local_settings(tmp_path / "data"))
    app = create_app(GatewayConfig(teams_file=teams, upstream=upstream, upstream_auth="x:y",
                                   session_key="k" * 40, environ=ENVIRON, audit=audit))
    with TestClient(app) as client:
        yield client
    audit.close()


@contextmanager
def store_down(data_dir: Path) -> Iterator[None]:
    """The audit file's path taken by a folder: every append fails, then works again."""
    path = audit_file(local_settings(data_dir))
    kept = path.with_suffix(".kept")
    if path.exists():
        path.rename(kept)
    path.mkdir(parents=True)
    try:
        yield
    finally:
        shutil.rmtree(path)
        if kept.exists():
            kept.rename(path)


def records(data_dir: Path, action: str | None = None) -> list[AuditRecord]:
    with open_audit_log(local_settings(data_dir)) as log:
        return list(log.records(AuditQuery(action=action)))


def test_every_401_and_403_is_recorded_and_shown(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    with gateway(tmp_path) as client:
        anonymous = client.get("/api/flows/?token=query-secret")
        wrong = client.post("/api/flows/filter", headers=bearer("viv", "not-it"),
                            content=b'{"body": "body-secret"}')
        teams = client.put("/gateway/teams", headers=bearer("viv"), content=b"x: body-secret")
        limit = client.patch("/api/work_pools/gpu/queues/alpha", headers=bearer("bo"),
                             json={"concurrency_limit": 5})
        malformed = client.post("/dashboard", headers=bearer("viv"))
    assert [r.status_code for r in (anonymous, wrong, teams, limit)] == [401, 401, 403, 403]
    assert malformed.status_code == 405  # not a decision on a caller: not recorded
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLOPS_AUDIT_KEY", raising=False)
    assert cli(["audit", "show", "--action", "request.refused", "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["actor"], r["team"], r["subject"], r["details"]["status"]) for r in shown] == [
        ("anonymous", None, "GET /api/flows/", 401),
        ("anonymous", None, "POST /api/flows/filter", 401),
        ("viv", None, "PUT /gateway/teams", 403),
        ("bo", "alpha", "PATCH /api/work_pools/gpu/queues/alpha", 403)], shown
    assert shown[0]["details"] == {"status": 401, "reason": "no credentials",
                                   "client": "testclient"}
    assert "may not" in shown[3]["details"]["reason"]
    stored = audit_file(local_settings(tmp_path / "data")).read_text()
    for secret in ("query-secret", "body-secret", "not-it", "viv-secret", "bo-secret"):
        assert secret not in stored
    assert open_audit_log(local_settings(tmp_path / "data")).verify().intact


def test_a_refusal_stays_a_refusal_when_the_trail_cannot_record_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with gateway(tmp_path) as client, store_down(tmp_path / "data"):
        with caplog.at_level(logging.ERROR, logger="infra.gateway.audit"):
            assert client.get("/api/flows/").status_code == 401
            assert client.put("/gateway/teams", headers=bearer("rui"),
                              content=b"x").status_code == 403
            client.app.state.gateway.audit.flush()  # written by the refusals' own thread
    gaps = [r.getMessage() for r in caplog.records if "AUDIT GAP" in r.getMessage()]
    assert len(gaps) == 2 and "cannot be written" in gaps[0], gaps
    assert records(tmp_path / "data") == []


def test_the_refusal_hook_lives_as_long_as_the_app(tmp_path: Path) -> None:
    before = list(refusals._HOOKS)
    with gateway(tmp_path):
        assert len(refusals._HOOKS) == len(before) + 1
    assert refusals._HOOKS == before


def test_a_teams_file_change_is_recorded_before_it_is_written(tmp_path: Path) -> None:
    teams = tmp_path / "teams.yaml"
    with gateway(tmp_path) as client:
        old = teams.read_bytes()
        new = old.replace(b"weight: 1\n    priority: 2", b"weight: 3\n    priority: 2")
        written = client.put("/gateway/teams", headers=bearer("ops"), content=new)
        assert written.status_code == 200, written.text
        assert teams.read_bytes() == new
        newer = new.replace(b"weight: 3", b"weight: 4")
        with store_down(tmp_path / "data"):
            refused = client.put("/gateway/teams", headers=bearer("ops"), content=newer)
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"].startswith(
        "the audit trail cannot record this teams-file change, so the file was not written: "
        f"audit file {audit_file(local_settings(tmp_path / 'data'))}")
    assert teams.read_bytes() == new  # not written
    [change] = records(tmp_path / "data", "teams.changed")
    assert (change.actor, change.team, change.subject) == ("ops", None, str(teams))
    assert change.details == {"old_sha256": hashlib.sha256(old).hexdigest(),
                              "new_sha256": hashlib.sha256(new).hexdigest(),
                              "via": "PUT /gateway/teams"}


def test_the_parameters_hash_is_of_the_canonical_merged_parameters() -> None:
    deployment = DeploymentInfo(id="d1", team="alpha", work_queue_name="alpha",
                                parameters={"seconds": 1, "params": {"b": 1, "a": "é"}})
    merged = run_parameters({"parameters": {"seconds": 2}}, deployment)
    assert merged == {"seconds": 2, "params": {"b": 1, "a": "é"}}
    canonical = '{"params":{"a":"é","b":1},"seconds":2}'.encode()
    assert parameters_hash(merged) == hashlib.sha256(canonical).hexdigest()
    assert parameters_hash({"seconds": 2, "params": {"a": "é", "b": 1}}) == parameters_hash(
        merged)  # key order does not matter
    assert run_parameters({}, deployment) == deployment.parameters


def test_the_gateway_refuses_to_start_without_its_audit_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from infra.gateway.__main__ import main

    for name, value in {"MLOPS_PROFILE": "production", "MLOPS_DATA_DIR": str(tmp_path),
                        "MLOPS_PREFECT_SERVER_AUTH": "a", "MLOPS_GATEWAY_SESSION_KEY": "k" * 40
                        }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLOPS_AUDIT_KEY", raising=False)
    (tmp_path / "teams.yaml").write_text(TEAMS_YAML)
    assert main(["--teams", str(tmp_path / "teams.yaml")]) == 2
    assert "MLOPS_AUDIT_KEY is not set" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "audit")
