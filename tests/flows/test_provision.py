"""Provisioning against a real Prefect server: what is applied is read back from the API.

Each test declares pools of its own (the server is shared by the session), so the
numbers read back belong to that test alone.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from infra.provision import main, provision
from mlops.fairshare.teams import limit_name, load_teams

REPO = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _own_audit_trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` records what it applies in the audit trail: this test's, not the checkout's."""
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))


def _teams_file(tmp_path: Path, prefix: str, vision_gpu: int = 2) -> Path:
    raw = {
        "pools": {f"{prefix}-gpu": {"capacity": 4}, f"{prefix}-cpu": {"capacity": 6}},
        "teams": [
            {"name": "vision", "weight": 2, "priority": 1,
             "quotas": {f"{prefix}-gpu": vision_gpu, f"{prefix}-cpu": 3}},
            {"name": "default", "weight": 1, "priority": 2,
             "quotas": {f"{prefix}-gpu": 1, f"{prefix}-cpu": 2}},
        ],
    }
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def _read_pool(pool: str) -> dict:
    """The pool's limit, its queues as name -> (limit, priority), and the teams' limits."""
    async with get_client() as client:
        work_pool = await client.read_work_pool(pool)
        queues = await client.read_work_queues(work_pool_name=pool)
        limits = {}
        for team in ("vision", "default"):
            found = await client.read_global_concurrency_limit_by_name(limit_name(team, pool))
            limits[team] = found.limit
    return {"type": work_pool.type, "limit": work_pool.concurrency_limit, "limits": limits,
            "queues": {q.name: (q.concurrency_limit, q.priority) for q in queues}}


def test_apply_creates_everything_and_a_second_run_changes_nothing(
        prefect_server: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _teams_file(tmp_path, "first")
    assert main(["--file", str(path)]) == 0
    first = capsys.readouterr().out
    assert "create pool first-gpu (type process, concurrency 4)" in first
    assert "create queue first-gpu/vision (concurrency 2, priority 1)" in first
    assert "10 change(s) applied" in first

    gpu = asyncio.run(_read_pool("first-gpu"))
    assert gpu == {"type": "process", "limit": 4, "limits": {"vision": 2, "default": 1},
                   "queues": {"vision": (2, 1), "default": (1, 2)}}
    cpu = asyncio.run(_read_pool("first-cpu"))
    assert cpu["limit"] == 6 and cpu["queues"] == {"vision": (3, 1), "default": (2, 2)}
    assert cpu["limits"] == {"vision": 3, "default": 2}

    assert main(["--file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "no changes"


def test_quota_change_updates_exactly_that(prefect_server: None, tmp_path: Path) -> None:
    asyncio.run(provision(load_teams(_teams_file(tmp_path, "quota"))))
    changed = load_teams(_teams_file(tmp_path, "quota", vision_gpu=3))

    planned = asyncio.run(provision(changed, dry_run=True))
    assert not planned.applied
    assert asyncio.run(_read_pool("quota-gpu"))["queues"]["vision"] == (2, 1)  # dry run

    result = asyncio.run(provision(changed))
    assert [str(change) for change in result.changes] == [
        "update queue quota-gpu/vision concurrency 2 -> 3",
        "update limit team:vision:quota-gpu limit 2 -> 3",
    ]
    gpu = asyncio.run(_read_pool("quota-gpu"))
    assert gpu["queues"] == {"vision": (3, 1), "default": (1, 2)}
    assert gpu["limits"] == {"vision": 3, "default": 1}
    assert asyncio.run(provision(changed)).changes == []


def test_unmanaged_queue_is_reported_kept_and_priorities_restored(
        prefect_server: None, tmp_path: Path) -> None:
    config = load_teams(_teams_file(tmp_path, "keep"))
    asyncio.run(provision(config))

    async def drift() -> None:
        async with get_client() as client:
            vision = await client.read_work_queue_by_name("vision", work_pool_name="keep-gpu")
            await client.update_work_queue(vision.id, priority=10)
            await client.create_work_queue("old-team", work_pool_name="keep-gpu", priority=1)

    asyncio.run(drift())
    assert asyncio.run(_read_pool("keep-gpu"))["queues"] == {
        "old-team": (None, 1), "default": (1, 2), "vision": (2, 10)}

    # Giving vision priority 1 back makes Prefect shift old-team, which shifts default:
    # the provisioner sees that and puts default back in a second round.
    result = asyncio.run(provision(config))
    assert [str(change) for change in result.changes] == [
        "update queue keep-gpu/vision priority 10 -> 1",
        "update queue keep-gpu/default priority 3 -> 2",
    ]
    assert result.unmanaged == [
        "unmanaged queue keep-gpu/old-team (not in the teams file; left in place)"]
    assert asyncio.run(_read_pool("keep-gpu"))["queues"] == {
        "vision": (2, 1), "default": (1, 2), "old-team": (None, 3)}
    assert asyncio.run(provision(config)).changes == []


def test_invalid_file_applies_nothing(prefect_server: None, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _teams_file(tmp_path, "bad")
    raw = yaml.safe_load(path.read_text())
    raw["teams"][0]["quotas"]["bad-gpu"] = 9  # above capacity 4
    raw["teams"][1]["priority"] = 1  # not unique
    path.write_text(yaml.safe_dump(raw))

    assert main(["--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "quota 9 for pool 'bad-gpu' is above the pool's capacity 4" in err
    assert "priority 1 is not unique" in err and "nothing applied" in err

    async def read_back() -> tuple[list[str], list[str]]:
        async with get_client() as client:
            pools = [pool.name for pool in await client.read_work_pools()]
            limits = [lim.name for lim in await client.read_global_concurrency_limits(limit=200)]
            with pytest.raises(ObjectNotFound):
                await client.read_work_pool("bad-gpu")
        return pools, limits

    pools, limits = asyncio.run(read_back())
    assert not [name for name in pools if name.startswith("bad-")]
    assert not [name for name in limits if name.endswith(":bad-gpu") or name.endswith(":bad-cpu")]


def test_a_bad_drift_policy_applies_nothing(prefect_server: None, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _teams_file(tmp_path, "baddrift")
    raw = yaml.safe_load(path.read_text())
    raw["teams"][0]["drift"] = {"retrain": "no-slash", "cooldown_s": 3600}
    path.write_text(yaml.safe_dump(raw))
    assert main(["--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"team {raw['teams'][0]['name']}: drift.retrain" in err and "nothing applied" in err

    async def pools() -> list[str]:
        async with get_client() as client:
            return [pool.name for pool in await client.read_work_pools()]

    assert not [name for name in asyncio.run(pools()) if name.startswith("baddrift-")]


def test_command_line_as_a_user_types_it(prefect_server: None, tmp_path: Path) -> None:
    path = _teams_file(tmp_path, "cli")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    command = [sys.executable, "-m", "infra.provision", "--file", str(path)]
    dry = subprocess.run([*command, "--dry-run"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 10 change(s) planned, none applied" in dry.stdout
    with pytest.raises(ObjectNotFound):
        asyncio.run(_read_pool("cli-gpu"))
