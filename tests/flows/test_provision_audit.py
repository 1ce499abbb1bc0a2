"""`python -m infra.provision` records a teams file it applies (``teams.changed``, under
the admin account) before it changes anything, against a real Prefect server; when the
audit trail cannot record, nothing is applied and it exits 1 saying why."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from infra.provision import main
from tests.unit.test_gateway_audit import records, store_down


async def _pool_exists(name: str) -> bool:
    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            return False
    return True


def test_a_changed_teams_file_is_recorded_before_it_is_applied(
        prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MLOPS_AUDIT_KEY", raising=False)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.setenv("MLOPS_SECRET_OPS", "ops-secret")  # the admin account it acts as
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump({
        "platform": {"admins": [{"name": "ops", "credential": "env:MLOPS_SECRET_OPS"}]},
        "pools": {"prov-audit": {"capacity": 2}},
        "teams": [{"name": "default", "weight": 1, "priority": 1,
                   "quotas": {"prov-audit": 1}}]}))

    with store_down(data_dir):
        assert main(["--file", str(teams)]) == 1
    assert ("the audit trail cannot record this teams-file change, so nothing was applied: "
            "audit file ") in capsys.readouterr().err
    assert not asyncio.run(_pool_exists("prov-audit"))

    assert main(["--file", str(teams)]) == 0
    applied = capsys.readouterr().out
    assert asyncio.run(_pool_exists("prov-audit"))
    [changed] = records(data_dir, "teams.changed")
    assert (changed.actor, changed.team, changed.subject) == ("ops", None, str(teams))
    assert changed.details["new_sha256"] == hashlib.sha256(teams.read_bytes()).hexdigest()
    assert changed.details["changes"] == applied.splitlines()[:changed.details["change_count"]]

    assert main(["--file", str(teams)]) == 0 and "no changes" in capsys.readouterr().out
    assert len(records(data_dir, "teams.changed")) == 1  # nothing applied: nothing recorded
