"""Identities in the teams file: roles per team, credentials that are never secrets."""

import copy
from pathlib import Path

import pytest

from mlops.fairshare.teams import parse_teams
from mlops.governance.identities import (
    PLATFORM,
    GovernanceError,
    Role,
    hash_secret,
    load_governance,
    parse_governance,
    verify_secret,
)

REPO_FILE = Path(__file__).parents[2] / "infra" / "teams.yaml"
ALICE_HASH = hash_secret("alice-password")
BASE = {
    "platform": {
        "admins": [{"name": "ops", "credential": "env:OPS_PASSWORD"}],
        "service_accounts": [
            {"name": "fairshare-controller", "role": "controller",
             "credential": "env:CONTROLLER_TOKEN"},
            {"name": "ci", "role": "deployer", "credential": "file:/run/secrets/ci-token"}],
        "residency": {"regions": ["me-central-1"]},
    },
    "pools": {"gpu": {"capacity": 4}, "cpu": {"capacity": 8}},
    "teams": [
        {"name": "alpha", "weight": 1, "priority": 1, "quotas": {"gpu": 2, "cpu": 4},
         "members": [{"name": "alice", "roles": ["runner", "approver"],
                      "credential": ALICE_HASH},
                     {"name": "carol", "roles": ["viewer"], "credential": "env:CAROL"}],
         "service_accounts": [{"name": "alpha-bot", "roles": ["runner"],
                               "credential": "env:ALPHA_BOT"}],
         "approval": {"required": True, "timeout_s": 600},
         "data": {"roots": ["s3://data/alpha/"], "regions": ["me-central-1"]}},
        {"name": "default", "weight": 1, "priority": 2, "quotas": {"gpu": 1, "cpu": 2},
         "members": [{"name": "alice", "roles": ["viewer"], "credential": ALICE_HASH}]},
    ],
}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(GovernanceError) as caught:
        parse_governance(raw)
    return caught.value.problems


def test_roles_are_per_team_and_admins_hold_them_everywhere() -> None:
    governance = parse_governance(copy.deepcopy(BASE))
    alice = governance.identities["alice"].principal
    assert alice.kind == "person" and alice.teams() == ["alpha", "default"]
    assert alice.roles_in("alpha") == {Role.RUNNER, Role.APPROVER}
    assert alice.roles_in("default") == {Role.VIEWER}
    assert alice.roles_in("beta") == frozenset()
    ops = governance.identities["ops"].principal
    assert ops.roles == {PLATFORM: {Role.ADMIN}} and ops.roles_in("beta") == {Role.ADMIN}
    assert governance.identities["ci"].principal.roles_in("alpha") == {Role.DEPLOYER}
    assert governance.identities["alpha-bot"].principal.kind == "service"
    assert governance.team("alpha").approval.required
    assert governance.team("default").approval.required is False  # the default
    assert governance.team("alpha").data.regions == ["me-central-1"]
    assert governance.residency and governance.residency.regions == ["me-central-1"]


def test_the_fairshare_parser_reads_the_same_file() -> None:
    config = parse_teams(copy.deepcopy(BASE))
    assert [team.name for team in config.teams] == ["alpha", "default"]


def test_authentication_by_hash_and_by_reference(tmp_path: Path) -> None:
    raw = copy.deepcopy(BASE)
    token = tmp_path / "ci-token"
    token.write_text("ci-secret\n")
    raw["platform"]["service_accounts"][1]["credential"] = f"file:{token}"
    governance = parse_governance(raw)
    environ = {"CAROL": "carol-password", "OPS_PASSWORD": "ops-password"}
    assert governance.authenticate("alice", "alice-password", environ).name == "alice"
    assert governance.authenticate("alice", "wrong", environ) is None
    assert governance.authenticate("carol", "carol-password", environ).name == "carol"
    assert governance.authenticate("carol", "carol-password", {}) is None  # variable unset
    assert governance.authenticate("ci", "ci-secret", environ).name == "ci"
    assert governance.authenticate("alpha-bot", "", {"ALPHA_BOT": ""}) is None
    assert governance.authenticate("mallory", "alice-password", environ) is None


def test_a_hash_is_salted_and_verifies_only_its_secret() -> None:
    first, second = hash_secret("s3cret"), hash_secret("s3cret")
    assert first != second and first.startswith("scrypt$")
    assert verify_secret(first, "s3cret", {}) and verify_secret(second, "s3cret", {})
    assert not verify_secret(first, "s3cret!", {})
    with pytest.raises(ValueError, match="empty"):
        hash_secret("")


@pytest.mark.parametrize("credential", ["hunter2", "env:", "file:relative/path",
                                        "scrypt$1$2", "env:NOT-A-NAME"])
def test_a_secret_in_the_file_is_refused(credential: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["teams"][0]["members"][1]["credential"] = credential
    problems = _problems(raw)
    assert len(problems) == 1 and "alpha.members[1] (carol)" in problems[0]


def test_every_problem_is_listed_at_once() -> None:
    raw = copy.deepcopy(BASE)
    raw["platform"]["service_accounts"][0]["role"] = "root"
    raw["platform"]["colour"] = "blue"
    raw["teams"][0]["members"][0]["roles"] = ["owner"]
    raw["teams"][0]["approval"] = {"required": "yes"}
    raw["teams"][1]["members"].append({"name": "carol", "roles": ["viewer"],
                                       "credential": "env:ANOTHER"})
    problems = _problems(raw)
    assert any("platform: unknown key 'colour'" in p for p in problems)
    assert any("service_accounts[0]" in p and "role" in p for p in problems)
    assert any("alpha.members[0]" in p and "roles" in p for p in problems)
    assert any("alpha.approval" in p for p in problems)
    assert any("'carol' is declared twice" in p for p in problems)


def test_the_repository_file_declares_no_secret() -> None:
    governance = load_governance(REPO_FILE)
    for identity in governance.identities.values():
        assert identity.credential.startswith(("scrypt$", "env:", "file:"))


def test_the_cli_hashes_a_secret_from_standard_input() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flows.cli", "hash-secret"],
                          input="typed secret\n", capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    credential = done.stdout.strip()
    assert "typed secret" not in done.stdout
    assert verify_secret(credential, "typed secret", {})
