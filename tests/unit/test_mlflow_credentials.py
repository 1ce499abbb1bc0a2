"""Which MLflow credentials each process gets: a run its team's pair, a service only its
model's team's, the MLflow server its admin's through the environment, never a command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.credentials import MLFLOW_ADMIN, MLFLOW_FLASK_KEY, mlflow_variables, platform_secrets
from infra.mlflow_users import auth_config_path, auth_database_uri, write_auth_config
from infra.services import environment, services
from mlops.config import MlflowAuth, Settings, mlflow_password_variable, mlflow_username
from mlops.governance.identities import parse_governance
from mlops.serving.deploy import _service_env

SERVER = "http://127.0.0.1:5000"


def test_each_team_has_its_own_user_and_variable() -> None:
    assert mlflow_username("alpha") == "team-alpha"
    assert mlflow_password_variable("alpha") == "MLOPS_MLFLOW_PASSWORD_ALPHA"
    assert mlflow_password_variable("data-eng") == "MLOPS_MLFLOW_PASSWORD_DATA_ENG"


def test_a_run_gets_its_teams_pair_only_on_a_tracking_server(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_PASSWORD_ALPHA", "alpha-secret")
    monkeypatch.setenv("MLOPS_MLFLOW_PASSWORD_BETA", "beta-secret")
    monkeypatch.delenv("MLOPS_MLFLOW_PASSWORD_GAMMA", raising=False)
    on_server = Settings(data_dir=tmp_path, tracking_uri=SERVER)
    alpha = on_server.mlflow_auth("alpha")
    assert alpha is not None and alpha.username == "team-alpha"
    assert alpha.password.get_secret_value() == "alpha-secret"
    assert "alpha-secret" not in repr(alpha) + str(alpha)  # never printed
    assert on_server.mlflow_auth("gamma") is None  # no password: the server answers 401
    assert Settings(data_dir=tmp_path).mlflow_auth("alpha") is None  # SQLite: no users


def test_a_service_gets_only_its_teams_credentials(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_PASSWORD_ALPHA", "alpha-secret")
    monkeypatch.setenv("MLOPS_MLFLOW_PASSWORD_BETA", "beta-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "leftover")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "the-workers-own")
    auth = MlflowAuth(username="team-beta", password="beta-secret")
    env = _service_env(tmp_path / "token", auth)
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        "team-beta", "beta-secret")
    assert not any(name.startswith("MLOPS_MLFLOW_PASSWORD_") for name in env)
    assert "PREFECT_API_AUTH_STRING" not in env
    assert "MLFLOW_TRACKING_PASSWORD" not in _service_env(tmp_path / "token", None)


GOVERNANCE = parse_governance({
    "platform": {"admins": [{"name": "ops", "credential": "env:MLOPS_SECRET_OPS"}]},
    "teams": [{"name": "alpha"}, {"name": "beta"}]})


def test_local_secrets_are_generated_production_ones_come_from_the_environment(
        tmp_path: Path) -> None:
    wanted = mlflow_variables(GOVERNANCE)
    assert wanted == [MLFLOW_ADMIN, MLFLOW_FLASK_KEY, "MLOPS_MLFLOW_PASSWORD_ALPHA",
                      "MLOPS_MLFLOW_PASSWORD_BETA"]
    local = platform_secrets(Settings(data_dir=tmp_path), GOVERNANCE, {})
    assert all(len(local[name]) >= 32 for name in wanted)
    assert platform_secrets(Settings(data_dir=tmp_path), GOVERNANCE, {}) == local  # kept
    production = Settings(data_dir=tmp_path / "p", profile="production")
    assert not set(wanted) & set(platform_secrets(production, GOVERNANCE, {}))


def _values() -> dict[str, str]:
    return {"MLOPS_PREFECT_SERVER_AUTH": "server-auth", MLFLOW_ADMIN: "admin-secret",
            MLFLOW_FLASK_KEY: "flask-key", "MLOPS_MLFLOW_PASSWORD_ALPHA": "alpha-secret"}


def test_no_password_on_the_mlflow_servers_command_line(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, profile="production", pg_password="pg-secret")
    mlflow = next(s for s in services(settings, secrets=_values()) if s.name == "mlflow-server")
    command = " ".join(mlflow.command)
    assert "--app-name basic-auth" in command
    assert "postgresql+psycopg2://mlops@127.0.0.1:5432/mlops_mlflow" in command
    assert not any(secret in command for secret in [*_values().values(), "pg-secret"])
    assert mlflow.env["PGPASSWORD"] == "pg-secret"
    assert mlflow.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "admin-secret"
    assert mlflow.env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "flask-key"
    assert mlflow.env["MLFLOW_AUTH_CONFIG_PATH"] == str(auth_config_path(settings))
    assert auth_database_uri(settings).endswith("@127.0.0.1:5432/mlops_mlflow_auth")
    assert "pg-secret" not in auth_database_uri(settings)


def test_workers_track_on_the_server_with_every_teams_password(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    worker = next(s for s in services(settings, secrets=_values()) if s.name == "worker-gpu")
    assert worker.env["MLOPS_TRACKING_URI"] == settings.mlflow_url
    assert worker.env["MLOPS_MLFLOW_PASSWORD_ALPHA"] == "alpha-secret"
    assert MLFLOW_ADMIN not in worker.env and "MLFLOW_AUTH_ADMIN_PASSWORD" not in worker.env


def test_no_platform_process_inherits_an_mlflow_secret(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    for name in ("MLOPS_MLFLOW_PASSWORD_ALPHA", MLFLOW_ADMIN, "MLFLOW_TRACKING_PASSWORD",
                 "PGPASSWORD"):
        monkeypatch.setenv(name, "inherited")
    assert "inherited" not in environment(Settings(data_dir=tmp_path)).values()


def test_the_auth_config_is_private_and_holds_no_password(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    (tmp_path / "platform").mkdir()
    path = write_auth_config(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "default_permission = READ" in text and "admin_password" not in text
    assert f"sqlite:///{tmp_path}/platform/mlflow-auth.db" in text
