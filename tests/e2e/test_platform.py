"""Platform mode as a team uses it: `make up`, `make deploy`, a run triggered the way the
Prefect UI does it (REST), executed by the process workers, and `make down`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from benchmarks.synthetic import generate_panel, synthetic_spec
from tests.conftest import wait_for
from tests.e2e.stack import (
    ROOT,
    PrefectApi,
    credentials,
    run_module,
    running_stack,
    team_data,
    wait_final,
)

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with running_stack(tmp_path_factory.mktemp("platform")) as stack:
        yield stack


def test_up_starts_everything_once(platform: dict) -> None:
    secrets = Path(platform["env"]["MLOPS_DATA_DIR"]) / "platform" / "secrets"
    assert (f"Prefect UI: http://127.0.0.1:{platform['env']['MLOPS_PREFECT_PORT']} (the "
            f"gateway: sign in as `local`, the password is MLOPS_SECRET_LOCAL in {secrets})"
            ) in platform["up"]
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert all(value not in platform["up"] for value in platform["secrets"].values())
    assert "create queue gpu/default" in platform["up"]
    status = run_module("infra.services", "status", env=platform["env"])
    # Prefect, its gateway, MLflow, a worker per pool, the fair-share controller, the node
    # exporter and Prometheus.
    assert status.returncode == 0 and status.stdout.count("running (pid") == 8, status.stdout
    assert "prefect-gateway" in status.stdout
    again = run_module("infra.services", "up", env=platform["env"])
    assert again.stdout.count("already running") == 8 and "no changes" in again.stdout
    gauges = httpx.get(f"http://127.0.0.1:{platform['env']['MLOPS_FAIRSHARE_PORT']}/metrics")
    assert 'mlops_fairshare_allocation{pool="gpu",team="vision"}' in gauges.text
    mlflow = f"http://127.0.0.1:{platform['env']['MLOPS_MLFLOW_PORT']}/health"
    assert httpx.get(mlflow).status_code == 200
    # MLflow's job runner is off: no huey consumer processes beside its server.
    pid = int((secrets.parent / "mlflow-server.pid").read_text())
    children = psutil.Process(pid).children(recursive=True)
    assert not [p for p in children if "huey" in " ".join(p.cmdline())], children
    workers = platform["client"].post("/work_pools/gpu/workers/filter", {}).json()
    assert [w["status"] for w in workers] == ["ONLINE"]


def test_prometheus_scrapes_every_process_up_starts(platform: dict) -> None:
    """`make status` shows Prometheus' URL and every target up: itself, the machine's node
    exporter, MLflow's and Prefect's server metrics (behind their auth) and the controller."""
    url = f"http://127.0.0.1:{platform['env']['MLOPS_PROMETHEUS_PORT']}"
    assert f"Prometheus: {url}" in platform["up"]

    def all_up() -> str | None:
        status = run_module("infra.services", "status", env=platform["env"])
        return status.stdout if status.returncode == 0 else None

    status = wait_for(all_up, 90.0, "every scrape target up")
    assert f"Prometheus: {url}" in status
    jobs = {line.split()[0] for line in status.splitlines() if line.startswith("  ")}
    assert jobs == {"prometheus", "node", "mlflow", "prefect", "fairshare-controller"}, status
    for job, metric in (("mlflow", "mlflow_http_request_total"),
                        ("prefect", "process_cpu_seconds_total"),
                        ("fairshare-controller", "mlops_fairshare_capacity"),
                        ("node", "node_memory_MemAvailable_bytes")):
        found = httpx.get(f"{url}/api/v1/query", params={"query": f'{metric}{{job="{job}"}}'})
        assert found.json()["data"]["result"], (job, metric)
    rules = httpx.get(f"{url}/api/v1/rules").json()["data"]["groups"]
    assert rules, "no rule group loaded"


def test_the_ci_command_then_make_deploy_register_the_deployments(platform: dict) -> None:
    env = {**platform["env"], "PREFECT_API_URL": platform["api"]}
    workflow = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    command = workflow["jobs"]["deploy"]["steps"][-1]["run"]
    # CI's secret PREFECT_API_KEY is its service account's `ci:<secret>`.
    ci_env = {**env, "MLOPS_GIT_REPOSITORY": "https://example.invalid/mlops.git",
              "MLOPS_GIT_COMMIT": "abc123", "PREFECT_API_KEY": ":".join(
                  credentials(platform, "ci")),
              "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    ci = subprocess.run(command, shell=True, cwd=ROOT, env=ci_env, text=True,
                        capture_output=True, timeout=600)
    assert ci.returncode == 0, ci.stdout[-2000:] + ci.stderr[-2000:]
    remote = _deployment(platform["client"], "vision-nightly")
    clone = remote["pull_steps"][0]["prefect.deployments.steps.git_clone"]
    assert clone["repository"] == "https://example.invalid/mlops.git"
    assert remote["version"] == "abc123"
    schedule = remote["schedules"][0]["schedule"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "Europe/Berlin"
    # Local workers run from this checkout: make deploy swaps only the pull step.
    deployed = run_module("infra.flow_deployments", env=env)
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    local = _deployment(platform["client"], "vision-nightly")
    assert local["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                    {"directory": str(ROOT)}}]
    deployed = platform["client"].post("/deployments/filter", {}).json()
    assert {d["name"] for d in deployed} == {"default", "vision-nightly", "nlp-nightly",
                                             "vision", "nlp", "default-nightly",
                                             "default-hourly", "daily"}
    scoring = platform["client"].get("/deployments/name/batch-score/default-nightly")
    assert scoring["work_pool_name"] == "cpu"
    assert scoring["schedules"][0]["schedule"]["cron"] == "0 5 * * *"
    promotion = platform["client"].get("/deployments/name/promote-challenger/default")
    assert promotion["work_pool_name"] == "cpu" and promotion["schedules"] == []
    drift = platform["client"].get("/deployments/name/drift-check/default-hourly")
    assert drift["work_pool_name"] == "cpu"
    assert drift["schedules"][0]["schedule"]["interval"] == 3600
    parents = {d["name"]: d for d in deployed if "pipeline:distributed" in d["tags"]}
    assert sorted(parents) == ["default", "nlp", "vision"]  # one per team: a limit per team
    for team, parent in parents.items():
        assert parent["global_concurrency_limit"]["limit"] == 1, parent
        assert f"team:{team}" in parent["tags"]


def _deployment(client: PrefectApi, name: str) -> dict:
    return client.get(f"/deployments/name/training-pipeline/{name}")


def test_a_ui_triggered_run_completes_on_the_workers(platform: dict) -> None:
    data = team_data(platform) / "panel.parquet"  # the team's own data folder
    generate_panel(n_entities=40, n_periods=6, seed=5).to_parquet(data, index=False)
    spec = synthetic_spec(str(data), name="ui_panel").model_dump(mode="json")
    deployment = _deployment(platform["client"], "default")
    body = {"parameters": {"params": {"spec": spec, "model": {"epochs": 3}, "deploy": False}},
            "idempotency_key": "ui_panel"}
    run = platform["client"].post(f"/deployments/{deployment['id']}/create_flow_run",
                                           body)
    assert run.status_code == 201, run.text
    state = wait_final(platform["client"], run.json()["id"], 400)["state"]["type"]
    assert state == "COMPLETED", state
    client_env = platform["env"]
    tracking = f"sqlite:///{client_env['MLOPS_DATA_DIR']}/mlflow.db"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    versions = client.search_model_versions("name='default.ui_panel'")  # <team>.<dataset>
    assert len(versions) == 1


def test_a_dataset_in_another_teams_folder_is_refused_before_it_is_read(
        platform: dict) -> None:
    """`make up` hands its teams file to the workers: a run of team default may read only
    from default's roots, whatever path the UI's form was given."""
    data = team_data(platform, "vision") / "theirs.parquet"
    generate_panel(n_entities=40, n_periods=6, seed=7).to_parquet(data, index=False)
    spec = synthetic_spec(str(data), name="theirs").model_dump(mode="json")
    deployment = _deployment(platform["client"], "default")
    body = {"parameters": {"params": {"spec": spec, "model": {"epochs": 1}, "deploy": False}}}
    run = platform["client"].post(f"/deployments/{deployment['id']}/create_flow_run", body)
    assert run.status_code == 201, run.text
    assert wait_final(platform["client"], run.json()["id"], 300)["state"]["type"] == "FAILED"
    message = platform["client"].get(f"/flow_runs/{run.json()['id']}")["state"]["message"]
    assert "dataset location" in message and "refused for team default" in message, message
    assert not (Path(platform["env"]["MLOPS_DATA_DIR"]) / "datasets" / "theirs").exists()


def test_invalid_parameters_are_refused_by_the_server(platform: dict) -> None:
    deployment = _deployment(platform["client"], "default")
    params = deployment["parameters"]["params"]
    body = {"parameters": {"params": {**params, "model": {"epochs": 0}}}}
    refused = platform["client"].post(
        f"/deployments/{deployment['id']}/create_flow_run", body)
    assert refused.status_code == 409, refused.text
    assert "'params.model.epochs'" in refused.text and "minimum of 1" in refused.text
    body = {"parameters": {"params": {**params, "priority": "urgent"}}}
    refused = platform["client"].post(
        f"/deployments/{deployment['id']}/create_flow_run", body)
    assert refused.status_code == 409 and "'params.priority'" in refused.text, refused.text
    # A team other than the deployment's never reaches the server: the gateway refuses it.
    body = {"parameters": {"params": {**params, "team": "Bad Team"}}}
    refused = platform["client"].post(
        f"/deployments/{deployment['id']}/create_flow_run", body)
    assert refused.status_code == 403, refused.text
    assert "params.team 'Bad Team' differs from the deployment's team 'default'" in refused.text
