"""The Prefect UI through the gateway, in a real headless browser (Debian's chromium,
driven by Playwright): a member of team alpha signs in on the gateway's login page, opens
alpha's deployment, fills its parameter form and starts a run, which the workers run and
the event feed shows; on beta's deployment the same form is refused, the UI says why, and
no run is made. `make tools` installs chromium (the tests run it with --no-sandbox, as
root)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.sleepy_flow import team_job
from tests.e2e.stack import (
    PLATFORM_ACCOUNTS,
    credentials,
    deploy_from_checkout,
    flow_schema,
    running_stack,
    wait_final,
)

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
JOB = "tests/e2e/sleepy_flow.py:team_job"
TEAMS_YAML = PLATFORM_ACCOUNTS + """\
pools:
  gpu: {capacity: 2, type: process}
  cpu: {capacity: 1, type: process}
teams:
  - name: alpha
    weight: 1
    priority: 1
    quotas: {gpu: 1, cpu: 0}
    members:
      - {name: amy, roles: [runner], credential: "env:MLOPS_SECRET_AMY"}
  - name: beta
    weight: 1
    priority: 2
    quotas: {gpu: 1, cpu: 0}
  - name: default
    weight: 1
    priority: 3
    quotas: {gpu: 0, cpu: 1}
"""
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("gateway-browser")
    teams = root / "teams.yaml"
    teams.write_text(TEAMS_YAML)
    with running_stack(root, "--teams", str(teams), PREFECT_WORKER_QUERY_SECONDS="1") as found:
        schema = flow_schema(team_job)
        found["deployments"] = {team: deploy_from_checkout(
            found["client"], "team-job", JOB, f"job-{team}", "gpu", team,
            {"params": {"seconds": 0.5, "team": team}}, tags=[f"team:{team}"], schema=schema)
            for team in ("alpha", "beta")}
        yield found


@pytest.fixture(scope="module")
def page(stack: dict) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make tools` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        browser.close()


def root(stack: dict) -> str:
    return stack["api"].removesuffix("/api")


def _open_run_form(page: Any, stack: dict, team: str) -> None:
    """From the deployment's page: Run, then Custom run, until its form is shown."""
    page.goto(f"{root(stack)}/v2/deployments/deployment/{stack['deployments'][team]}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    page.get_by_label("Seconds").wait_for()


def test_a_page_without_a_session_leads_to_the_login_page(page: Any, stack: dict) -> None:
    page.goto(f"{root(stack)}/v2/deployments/deployment/{stack['deployments']['alpha']}")
    assert re.search(r"/login\?next=%2Fv2%2Fdeployments", page.url), page.url
    page.fill("#username", "amy")
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text() == "Wrong name or password."
    page.fill("#username", "amy")
    page.fill("#password", credentials(stack, "amy")[1])
    page.click("button[type=submit]")
    page.get_by_text("job-alpha").first.wait_for()
    assert f"/v2/deployments/deployment/{stack['deployments']['alpha']}" in page.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "mlops_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_alphas_member_starts_a_run_from_the_form(page: Any, stack: dict) -> None:
    _open_run_form(page, stack, "alpha")
    page.get_by_label("Seconds").fill("0.3")
    with page.expect_response(re.compile(r"/api/deployments/.*/create_flow_run$")) as created:
        page.get_by_role("button", name="Submit").click()
    assert created.value.status == 201, created.value.text()
    run = created.value.json()
    assert run["deployment_id"] == stack["deployments"]["alpha"]
    assert run["parameters"]["params"] == {"seconds": 0.3, "team": "alpha",
                                           "priority": "normal"}
    assert "team:alpha" in run["tags"] and run["work_queue_name"] == "alpha"
    done = wait_final(stack["client"], run["id"], timeout_s=180)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    stack["alpha_run"] = run


def test_the_event_feed_shows_the_runs_events(page: Any, stack: dict) -> None:
    run = stack["alpha_run"]
    # An explicit range: the feed's default one ends at the last full minute.
    now = datetime.now(UTC)
    span = {"rangeType": "range", "start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=1)).isoformat()}
    deadline = time.monotonic() + 90
    while True:  # the server persists events in batches
        page.goto(f"{root(stack)}/v2/events?{urlencode(span)}")
        page.get_by_text("Event Feed").first.wait_for()
        page.wait_for_load_state("networkidle")
        text = page.locator("main").inner_text()
        if "Flow Run Completed" in text and run["name"] in text or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert "Flow Run Completed" in text and run["name"] in text, text[:2000]


def test_betas_deployment_is_refused_and_the_ui_says_why(page: Any, stack: dict) -> None:
    beta = stack["deployments"]["beta"]
    query = {"flow_runs": {"deployment_id": {"any_": [beta]}}}
    assert stack["client"].post("/flow_runs/count", query).json() == 0
    _open_run_form(page, stack, "beta")
    page.get_by_label("Seconds").fill("0.3")
    with page.expect_response(re.compile(r"/api/deployments/.*/create_flow_run$")) as refused:
        page.get_by_role("button", name="Submit").click()
    assert refused.value.status == 403, refused.value.text()
    page.get_by_text("refused: amy may not run.trigger in team beta").wait_for()
    assert stack["client"].post("/flow_runs/count", query).json() == 0


def test_the_ui_calls_the_gateway_and_shows_no_prompt_of_its_own(page: Any,
                                                                 stack: dict) -> None:
    settings = page.request.get(f"{root(stack)}/ui-settings").json()
    assert settings["api_url"] == stack["api"] and settings["auth"] is None
    anonymous = page.context.browser.new_context()
    try:
        answer = anonymous.request.post(f"{stack['api']}/flow_runs/filter", data={})
        assert answer.status == 401
    finally:
        anonymous.close()
