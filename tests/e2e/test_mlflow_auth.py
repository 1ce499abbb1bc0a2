"""MLflow per team, against the real tracking server `make up` starts (`mlflow server
--app-name basic-auth`, its users made by infra.mlflow_users): a team manages the models it
registers, named <team>.<dataset>; another team reads them but cannot add a version or move
or delete an alias (403, a RegistryError naming the model and the user); no credentials, 401.
On PostgreSQL, no password is on the server's command line."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from infra.credentials import MLFLOW_ADMIN, MLFLOW_FLASK_KEY, PRIVATE, SERVER_AUTH
from infra.mlflow_users import ensure_team_users, write_auth_config
from infra.production import ensure_postgres
from infra.services import services
from mlops.atomic_files import sha256_file
from mlops.config import MlflowAuth, Settings, mlflow_password_variable
from mlops.processes import running_pid, start_background, stop_background, wait_until_ready
from mlops.registry import (
    Lineage,
    RegistryError,
    acting_as,
    fetch_model,
    promote_champion,
    register_model,
    version_by_alias,
)
from tests.conftest import free_port
from tests.e2e.production_services import postgres_tenant
from tests.unit.test_registry import _tiny_onnx

pytestmark = pytest.mark.slow
TEAMS = ("alpha", "beta")


def _secrets() -> dict[str, str]:
    return {SERVER_AUTH: secrets.token_urlsafe(24), MLFLOW_ADMIN: secrets.token_urlsafe(24),
            MLFLOW_FLASK_KEY: secrets.token_urlsafe(24),
            **{mlflow_password_variable(team): secrets.token_urlsafe(24) for team in TEAMS}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with _mlflow_server(Settings(data_dir=tmp_path_factory.mktemp("mlflow"),
                                 mlflow_port=free_port())) as stack:
        yield stack


@contextmanager
def _mlflow_server(settings: Settings) -> Iterator[dict]:
    """The MLflow server as `make up` starts it (its command, environment and auth config),
    with the teams' users made; stopped after."""
    values = _secrets()
    settings.stage_dir("platform")
    write_auth_config(settings)
    service = next(s for s in services(settings, secrets=values) if s.name == "mlflow-server")
    folder = settings.data_dir / "platform"
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE}
    process = start_background(service.command, folder / "mlflow.log", folder / "mlflow.pid",
                               {**env, **service.env})
    try:
        wait_until_ready(service.health_url, process, folder / "mlflow.log", 180.0)
        lines = ensure_team_users(settings.mlflow_url, values[MLFLOW_ADMIN], TEAMS, values)
        yield {"settings": settings, "values": values, "url": settings.mlflow_url,
               "pid": process.pid, "users": lines}
    finally:
        stop_background(folder / "mlflow.pid")


def _auth(server: dict, team: str) -> MlflowAuth:
    return MlflowAuth(username=f"team-{team}",
                      password=server["values"][mlflow_password_variable(team)])


def _register(server: dict, team: str, auth: MlflowAuth | None, auc: float,
              dataset: str = "toy"):
    root = server["settings"].data_dir
    model = _tiny_onnx(root / "model.onnx")
    lineage = Lineage(dataset=dataset, dataset_uri=f"builtin://{dataset}",
                      dataset_hash="ab" * 32, feature_service=f"{dataset}_v1",
                      git_commit="deadbeef", team=team)
    return register_model(server["url"], root / "artifacts", str(model), sha256_file(model),
                          {"hidden": [8]}, {"test_auc": auc}, "test_auc", True, lineage,
                          auth=auth)


def _command_lines(pid: int) -> list[str]:
    """The command lines of a process and its descendants (what `ps` shows everyone)."""
    lines, pending = [], [pid]
    while pending:
        current = pending.pop()
        proc = Path(f"/proc/{current}")
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            for task in (proc / "task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return lines


def test_users_are_made_once_then_kept(server: dict) -> None:
    assert server["users"] == ["mlflow: user team-alpha created",
                               "mlflow: user team-beta created"]
    again = ensure_team_users(server["url"], server["values"][MLFLOW_ADMIN], TEAMS,
                              server["values"])
    assert again == ["mlflow: user team-alpha exists, password set",
                     "mlflow: user team-beta exists, password set"]


def test_no_secret_on_the_command_line_nor_in_the_auth_config(server: dict) -> None:
    lines = _command_lines(server["pid"])
    assert len(lines) >= 2 and "--app-name basic-auth" in lines[0], lines  # and its worker
    config = server["settings"].data_dir / "platform" / "mlflow-auth.ini"
    assert config.stat().st_mode & 0o777 == 0o600
    for value in server["values"].values():
        assert not any(value in line for line in lines)
        assert value not in config.read_text()


def test_without_credentials_the_server_answers_401(server: dict) -> None:
    answer = httpx.get(f"{server['url']}/api/2.0/mlflow/registered-models/search")
    assert answer.status_code == 401
    with pytest.raises(RegistryError, match=r"'alpha.nobody'.*no credentials.*401"):
        _register(server, "alpha", None, 0.5, dataset="nobody")


def test_a_team_manages_its_model_another_team_only_reads_it(
        server: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # The run's team picks its pair from the workers' environment (Settings.mlflow_auth).
    monkeypatch.setenv("MLOPS_MLFLOW_PASSWORD_ALPHA", _auth(server, "alpha").password
                       .get_secret_value())
    alpha = Settings(tracking_uri=server["url"]).mlflow_auth("alpha")
    first = _register(server, "alpha", alpha, 0.6)
    assert (first.name, first.champion) == ("alpha.toy", True)
    second = _register(server, "alpha", alpha, 0.5)  # worse: challenger only
    assert promote_champion(server["url"], "alpha.toy", second.version, alpha) == first.version
    assert promote_champion(server["url"], "alpha.toy", first.version, alpha) == second.version

    beta = _auth(server, "beta")
    with acting_as(beta):  # beta reads alpha's model: versions, aliases, the file
        assert version_by_alias(server["url"], "alpha.toy", "champion") == first.version
        fetched = fetch_model(server["url"], "models:/alpha.toy@champion",
                              server["settings"].data_dir / "beta-read")
        assert fetched.sha256 == first.sha256
    with pytest.raises(RegistryError, match=r"'alpha.toy' for user team-beta \(403"):
        _register(server, "alpha", beta, 0.99)  # a run claiming alpha with beta's user
    with pytest.raises(RegistryError, match=r"alias champion of model 'alpha.toy' for user "
                                            r"team-beta \(403"):
        promote_champion(server["url"], "alpha.toy", second.version, beta)

    own = _register(server, "beta", beta, 0.7)  # beta's own model of the same dataset
    assert (own.name, own.champion) == ("beta.toy", True)
    with acting_as(beta):
        client = MlflowClient(tracking_uri=server["url"], registry_uri=server["url"])
        attempts = {
            "version": lambda: client.create_model_version(
                "alpha.toy", f"runs:/{own.run_id}/model", run_id=own.run_id),
            "set alias": lambda: client.set_registered_model_alias(
                "alpha.toy", "champion", second.version),
            "delete alias": lambda: client.delete_registered_model_alias("alpha.toy",
                                                                         "champion"),
            "delete version": lambda: client.delete_model_version("alpha.toy", first.version)}
        for what, attempt in attempts.items():
            with pytest.raises(MlflowException) as refused:
                attempt()
            assert refused.value.error_code == "PERMISSION_DENIED", what
    with acting_as(alpha):
        client = MlflowClient(tracking_uri=server["url"], registry_uri=server["url"])
        versions = client.search_model_versions("name='alpha.toy'")
        assert sorted(v.version for v in versions) == sorted([first.version, second.version])
        assert client.get_registered_model("alpha.toy").aliases["champion"] == first.version


@pytest.fixture()
def on_postgresql(tmp_path: Path) -> Iterator[dict]:
    with postgres_tenant() as tenant:
        fields = {k.removeprefix("MLOPS_").lower(): v for k, v in tenant.items()}
        settings = Settings(**fields, profile="production", data_dir=tmp_path,
                            mlflow_port=free_port())
        ensure_postgres(settings)
        with _mlflow_server(settings) as stack:
            yield {**stack, "tenant": tenant}


def test_on_postgresql_neither_password_is_on_the_command_line(on_postgresql: dict) -> None:
    import psycopg2

    tenant, settings = on_postgresql["tenant"], on_postgresql["settings"]
    lines = _command_lines(on_postgresql["pid"])
    assert any("--backend-store-uri postgresql+psycopg2://" in line for line in lines), lines
    for value in [tenant["MLOPS_PG_PASSWORD"], *on_postgresql["values"].values()]:
        assert not any(value in line for line in lines)
    # The users are rows of MLflow's auth database, apart from the runs' database.
    with psycopg2.connect(settings.database_url("mlflow_auth")) as conn, conn.cursor() as cur:
        cur.execute("SELECT username FROM users ORDER BY username")
        assert [name for (name,) in cur.fetchall()] == ["mlops-admin", "team-alpha",
                                                        "team-beta"]
    assert running_pid(settings.data_dir / "platform" / "mlflow.pid") == on_postgresql["pid"]
