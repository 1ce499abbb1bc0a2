"""The deploy-on-push workflow (.github/workflows/deploy.yml), checked statically.

GitHub Actions does not run here: the file is validated against GitHub's workflow schema
as vendored in check-jsonschema (`--builtin-schema vendor.github-workflows`), with every
HTTP(S) request sent to a dead proxy so that a pass proves the check is offline, and its
jobs, trigger, secrets and deploy command are read with PyYAML.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
DEPLOY_COMMAND = "prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml"
DEAD_PROXY = "http://127.0.0.1:9"
CHECK = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]


def schema_check(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY}
    env.pop("NO_PROXY", None)
    return subprocess.run([*CHECK, str(path)], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def workflow() -> dict:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the bare key `on` as YAML 1.1's boolean True.
    loaded["on"] = loaded.pop(True)
    return loaded


def test_workflow_matches_githubs_schema():
    result = schema_check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_on_push_to_main_and_by_hand(workflow):
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in workflow["on"]


def test_test_job_runs_make_test_on_python_311(workflow):
    steps = workflow["jobs"]["test"]["steps"]
    assert any(s.get("with", {}).get("python-version") == "3.11" for s in steps)
    assert [s["run"] for s in steps if "run" in s] == ["make test"]


def test_deploy_job_needs_test_and_runs_the_deploy_command_with_the_secrets(workflow):
    job = workflow["jobs"]["deploy"]
    assert job["needs"] in ("test", ["test"])
    runs = [s for s in job["steps"] if "run" in s]
    install, deploy = runs
    assert install["run"].splitlines()[0] == "make venv"
    assert ".venv/bin" in install["run"] and "GITHUB_PATH" in install["run"]
    assert deploy["run"].strip() == DEPLOY_COMMAND
    assert deploy["env"] == {
        "PREFECT_API_URL": "${{ secrets.PREFECT_API_URL }}",
        "PREFECT_API_KEY": "${{ secrets.PREFECT_API_KEY }}",
        "MLOPS_GIT_REPOSITORY": "${{ github.server_url }}/${{ github.repository }}",
        "MLOPS_GIT_COMMIT": "${{ github.sha }}",
    }


def test_remote_workers_clone_the_commit_that_passed_ci(workflow):
    """The pull step pins the commit the deploy job passes (github.sha, after the tests),
    not a branch whose head may be a later push that failed CI."""
    config = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    clone = config["pull"][0]["prefect.deployments.steps.git_clone"]
    assert clone["commit_sha"] == "{{ $MLOPS_GIT_COMMIT }}" and "branch" not in clone
    deploy = [s for s in workflow["jobs"]["deploy"]["steps"] if "run" in s][-1]
    assert deploy["env"]["MLOPS_GIT_COMMIT"] == "${{ github.sha }}"


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("  workflow_dispatch:\n", "  workflow_dispatch:\n  pushed_to_main:\n", "$.on"),
        ("    needs: test\n    runs-on: ubuntu-latest\n", "    needs: test\n", "runs-on"),
    ],
    ids=["unknown-event", "job-without-runs-on"],
)
def test_broken_workflows_fail_the_schema_check(tmp_path, old, new, error):
    text = WORKFLOW.read_text()
    assert old in text
    broken = tmp_path / "deploy.yml"
    broken.write_text(text.replace(old, new, 1))
    result = schema_check(broken)
    assert result.returncode == 1
    assert error in result.stdout


def test_the_pinned_clone_checks_out_that_commit_not_the_branch_head(tmp_path, monkeypatch):
    """Prefect's own git_clone step, as remote workers run it, on a repository whose main
    moved on after the deployed commit (a push that failed CI)."""
    from prefect.deployments.steps import git_clone

    origin = tmp_path / "origin"
    git = ["git", "-C", str(origin), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "flow.py").write_text("VERSION = 'passed CI'\n")
    subprocess.run([*git, "add", "flow.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "tested"], check=True)
    tested = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    (origin / "flow.py").write_text("VERSION = 'failed CI'\n")
    subprocess.run([*git, "commit", "-q", "-am", "later push"], check=True)
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    cloned = git_clone(repository=str(origin), commit_sha=tested)
    assert (worker / cloned["directory"] / "flow.py").read_text() == "VERSION = 'passed CI'\n"
