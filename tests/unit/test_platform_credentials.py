"""The stack's secrets (infra.credentials) and who gets which (infra.services): generated
once on the local profile (0600), required on the production one, each process given only
its own, and none inherited from the caller's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.credentials import (
    MLFLOW_ADMIN,
    SERVER_AUTH,
    SESSION_KEY,
    identity_variables,
    local_auth,
    login_name,
    mlflow_variables,
    platform_secrets,
    read_secrets,
    secrets_file,
)
from infra.services import environment, services
from mlops.config import Settings
from mlops.governance.identities import Role, load_governance

TEAMS = """\
platform:
  admins: [{name: ops, credential: "env:MLOPS_SECRET_OPS"}]
  service_accounts:
    - {name: fairshare-controller, role: controller, credential: "env:MLOPS_SECRET_CTL"}
    - {name: ci, role: deployer, credential: "env:MLOPS_SECRET_CI"}
fairshare: {period_s: 10}
pools:
  gpu: {capacity: 2, type: process}
  cpu: {capacity: 1, type: process}
teams:
  - name: default
    weight: 1
    priority: 1
    quotas: {gpu: 1, cpu: 1}
    members:
      - {name: local, roles: [runner], credential: "env:MLOPS_SECRET_LOCAL"}
      - {name: dana, roles: [viewer], credential: "file:/run/secrets/dana"}
"""


@pytest.fixture
def teams(tmp_path: Path) -> Path:
    path = tmp_path / "teams.yaml"
    path.write_text(TEAMS)
    return path


def test_local_secrets_are_generated_once_private_and_the_environment_wins(
        tmp_path: Path, teams: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    governance = load_governance(teams)
    assert identity_variables(governance) == ["MLOPS_SECRET_CI", "MLOPS_SECRET_CTL",
                                              "MLOPS_SECRET_LOCAL", "MLOPS_SECRET_OPS"]
    first = platform_secrets(settings, governance, {"MLOPS_SECRET_CI": "from-the-env"})
    assert set(first) == {SERVER_AUTH, SESSION_KEY, *identity_variables(governance),
                          *mlflow_variables(governance)}
    assert first["MLOPS_SECRET_CI"] == "from-the-env"
    path = secrets_file(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "from-the-env" not in path.read_text()
    assert len(first[SERVER_AUTH]) >= 32 and first[SERVER_AUTH] != first[SESSION_KEY]
    again = platform_secrets(settings, governance, {})
    assert {k: v for k, v in again.items() if k != "MLOPS_SECRET_CI"} == {
        k: v for k, v in first.items() if k != "MLOPS_SECRET_CI"}


def test_the_production_profile_generates_nothing(tmp_path: Path, teams: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", profile="production")
    found = platform_secrets(settings, load_governance(teams), {SERVER_AUTH: "x"})
    assert found == {SERVER_AUTH: "x"} and not secrets_file(settings).exists()


def test_each_process_gets_only_its_own_credentials(tmp_path: Path, teams: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_SECRET_OPS", "leaked")
    monkeypatch.setenv("PREFECT_API_KEY", "leaked")
    settings = Settings(data_dir=tmp_path / "data", prefect_port=4300)
    values = platform_secrets(settings, load_governance(teams), {})
    started = {service.name: service for service in services(settings, teams, values)}
    assert list(started) == ["prefect-server", "prefect-gateway", "mlflow-server",
                             "worker-gpu", "worker-cpu", "fairshare-controller",
                             "node-exporter", "prometheus"]
    # Prometheus reads its scrape passwords from 0600 files, never from its environment.
    assert started["node-exporter"].env == started["prometheus"].env == {}
    server = started["prefect-server"]
    assert server.env["PREFECT_SERVER_API_AUTH_STRING"] == values[SERVER_AUTH]
    assert server.command[-4:] == ["--host", "127.0.0.1", "--port", "4301"]
    assert server.env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"
    mlflow = set(mlflow_variables(load_governance(teams)))
    assert started["prefect-gateway"].env == {k: v for k, v in values.items() if k not in mlflow}
    for pool in ("gpu", "cpu"):
        worker = started[f"worker-{pool}"].env
        assert worker["PREFECT_API_URL"] == "http://127.0.0.1:4301/api"
        assert worker["PREFECT_API_AUTH_STRING"] == values[SERVER_AUTH]
    controller = started["fairshare-controller"].env
    assert controller == {"PREFECT_API_AUTH_STRING":
                          f"fairshare-controller:{values['MLOPS_SECRET_CTL']}"}
    assert started["mlflow-server"].env["MLFLOW_AUTH_ADMIN_PASSWORD"] == values[MLFLOW_ADMIN]
    assert set(started["mlflow-server"].env) == {  # and one setting, no secret
        "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
    for service in started.values():  # no secret on a command line
        assert not set(values.values()) & set(service.command)
    inherited = environment(settings)
    assert "MLOPS_SECRET_OPS" not in inherited and "PREFECT_API_KEY" not in inherited
    assert inherited["PREFECT_API_URL"] == "http://127.0.0.1:4300/api"


def test_commands_on_the_machine_use_the_accounts_of_their_role(tmp_path: Path,
                                                               teams: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    values = platform_secrets(settings, load_governance(teams), {})
    assert local_auth(settings, teams, Role.ADMIN, {}) == {
        "PREFECT_API_AUTH_STRING": f"ops:{values['MLOPS_SECRET_OPS']}"}
    assert local_auth(settings, teams, Role.DEPLOYER, {})["PREFECT_API_AUTH_STRING"] \
        .startswith("ci:")
    assert local_auth(settings, teams, Role.ADMIN, {"PREFECT_API_KEY": "mine"}) == {}
    assert read_secrets(tmp_path / "none") == {}
    assert login_name(load_governance(teams)) == "local"
