"""Each team's drift policy from the teams file: defaults, checks, and the other parsers of
the same file leaving the key alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.config import ConfigError
from mlops.fairshare.teams import load_teams
from mlops.governance.identities import load_governance
from mlops.monitoring.policy import DriftPolicy, drift_policies, drift_policy

ROOT = Path(__file__).resolve().parents[2]


def teams_file(tmp_path: Path, drift: object) -> Path:
    raw = yaml.safe_load((ROOT / "infra" / "teams.yaml").read_text())
    for team in raw["teams"]:
        team.pop("drift", None)
    raw["teams"][0]["drift"] = drift
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_file_retrains_the_default_team_only() -> None:
    policies = drift_policies(ROOT / "infra" / "teams.yaml")
    assert policies["default"].retrain == "training-pipeline/default"
    assert {team for team, policy in policies.items() if policy.retrain} == {"default"}
    # The fair-share and governance parsers of the same file accept the key.
    load_teams(ROOT / "infra" / "teams.yaml")
    load_governance(ROOT / "infra" / "teams.yaml")


def test_a_team_without_a_policy_gets_the_defaults(tmp_path: Path) -> None:
    path = teams_file(tmp_path, {"feature_share": 0.3, "cooldown_s": 600})
    assert drift_policy(path, "vision") == DriftPolicy(feature_share=0.3, cooldown_s=600)
    assert drift_policy(path, "nlp") == DriftPolicy() and drift_policy(None, "x").retrain is None


@pytest.mark.parametrize(("drift", "named"), [
    ({"feature_share": 0}, "drift.feature_share"),
    ({"retrain": "no-slash"}, "drift.retrain"),
    ({"cooldown_s": 1}, "drift.cooldown_s"),
    ({"window": 60}, "drift.window"),  # a misspelt key is refused, not ignored
])
def test_a_bad_policy_names_the_team_and_the_key(tmp_path: Path, drift: dict,
                                                 named: str) -> None:
    with pytest.raises(ConfigError, match=f"team vision: {named}"):
        drift_policies(teams_file(tmp_path, drift))
