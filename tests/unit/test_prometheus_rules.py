"""The Prometheus rules as code (infra/prometheus/rules): promtool accepts them and their unit
tests (infra/prometheus/tests/rules_test.yml) pass; every alert has a test that fires it and
one that does not, every recording rule a test of its value, and TeamBelowGuarantee waits
the 3 controller periods that its description promises.
"""

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.fairshare.teams import FairShareConfig
from tests.conftest import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "rules"
RULES_TEST = ROOT / "infra" / "prometheus" / "tests" / "rules_test.yml"
ALERTS = ("GpusIdleWhileRunsWait", "TeamBelowGuarantee", "TrainingRunStalled",
          "GpuBudgetNearlySpent", "ServingLatencyAboveObjective",
          "ServingErrorRatioAboveObjective", "ScrapeTargetDown")
RECORDED = ("pool:mlops_utilisation:ratio", "pool_team:mlops_utilisation:ratio",
            "pool_team:mlops_queue_wait_seconds:max", "pool:mlops_queued:sum",
            "team:mlops_gpu_budget_used:ratio", "job:mlops_request_duration_seconds:p50_5m",
            "job:mlops_request_duration_seconds:p99_5m", "job:mlops_request_errors:ratio_5m")



def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def rules(name: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load((RULES / name).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rule_files() -> None:
    done = run_promtool("check", "rules", str(RULES / "recording.yml"), str(RULES / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_rule_files_define_exactly_the_named_rules() -> None:
    assert sorted(rule["alert"] for rule in rules("alerts.yml")) == sorted(ALERTS)
    assert sorted(rule["record"] for rule in rules("recording.yml")) == sorted(RECORDED)


def test_every_alert_has_a_summary_a_description_and_a_severity() -> None:
    for rule in rules("alerts.yml"):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "{{ $labels." in rule["annotations"]["description"], rule["alert"]


def alert_cases() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_TEST.read_text())["tests"]
    return [case for group in groups for case in group.get("alert_rule_test", [])]


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_is_tested_firing_and_not_firing(alert: str) -> None:
    cases = [case for case in alert_cases() if case["alertname"] == alert]
    firing = [case for case in cases if case.get("exp_alerts")]
    assert firing, f"no test case in {RULES_TEST.name} where {alert} fires"
    assert any(not case.get("exp_alerts") for case in cases), (
        f"no test case in {RULES_TEST.name} where {alert} stays quiet")


def test_every_recording_rule_has_a_value_test() -> None:
    groups = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {case["expr"].strip() for group in groups
              for case in group.get("promql_expr_test", [])}
    assert sorted(set(RECORDED) - tested) == []


def seconds(duration: str) -> float:
    """A Prometheus duration of s, m and h parts ("1m30s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"unsupported duration {duration!r}"
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def test_team_below_guarantee_waits_three_controller_periods() -> None:
    teams = yaml.safe_load((ROOT / "infra" / "teams.yaml").read_text())
    period_s = FairShareConfig(**(teams.get("fairshare") or {})).period_s
    rule = next(rule for rule in rules("alerts.yml") if rule["alert"] == "TeamBelowGuarantee")
    assert seconds(rule["for"]) == 3 * period_s
