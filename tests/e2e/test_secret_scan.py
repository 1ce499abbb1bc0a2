"""No secret leaks (issue 12, point 9): `make up PROFILE=production` on real services, with a
distinctive known value for every secret the stack is given, one pipeline run (trained,
registered and served), a CI deploy, and deliberately failing calls; then every place a
secret could surface is scanned for every value: the command line of each process the
stack started (its environment is where secrets belong, so it is not scanned), logs and
every file under the data directory, the Prefect API (run parameters, artifacts, logs,
events, deployments, pools, settings) and UI pages through the gateway, MLflow's runs,
models and versions, the S3 objects, rendered files and error messages.

A leak is reported by where it was found, with its context and the secret masked.
A secret is looked for as is, URL-encoded and base64-encoded (alone and as the
``name:secret`` of a Basic authorization header).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import psutil
import pytest
import yaml

from benchmarks.synthetic import generate_panel, synthetic_spec
from tests.conftest import free_port
from tests.e2e.production_services import AWS, RedisServer, moto_s3, postgres_tenant
from tests.e2e.stack import (
    ROOT,
    PrefectApi,
    credentials,
    deploy_from_checkout,
    running_stack,
    wait_final,
)

pytestmark = pytest.mark.slow
BUCKET = "mlops-scan"
PANEL = "scan_panel"
COMMIT = "c0ffee" + secrets.token_hex(17)  # what CI says passed its tests
# Files under the data directory that hold a secret on purpose, and why (not scanned).
SECRET_STORES = {
    "platform/secrets": "the local profile's secret store (mode 0600); absent on production",
    "audit/audit.key": "the local profile's audit MAC key (mode 0600); production uses "
                       "MLOPS_AUDIT_KEY",
    "service/*/admin-token": "a model service's admin token (mode 0600), handed to its "
                             "process by file name, never by value",
    "platform/prometheus/*.password": "Prometheus' basic-auth password of a job it scrapes "
                                      "(mode 0600), read by Prometheus by file name",
}
# Secret-like variables of the stack's environment that are not secret.
NOT_SECRET = {"AWS_ACCESS_KEY_ID", "MLOPS_S3_KMS_KEY_ID"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH|_KEY$")


def _sekrit(name: str) -> str:
    return f"sekrit-{name}-{secrets.token_hex(8)}"


class Scanner:
    """Every known secret in each form it could be written in; ``find`` names each one
    found in a text, with its context, every secret in it masked."""

    def __init__(self, values: dict[str, str], accounts: dict[str, str]) -> None:
        self.needles: dict[bytes, tuple[str, str]] = {}  # needle: (secret's name, form)
        self.prefixes = {value[:12].encode(): name for name, value in values.items()}
        for name, value in values.items():
            forms = {"as is": value, "url-encoded": quote(value, safe=""),
                     "url-encoded path": quote(value), "form-encoded": quote_plus(value),
                     "base64": base64.b64encode(value.encode()).decode()}
            if name in accounts:
                pair = f"{accounts[name]}:{value}".encode()
                forms["base64 of name:secret"] = base64.b64encode(pair).decode()
            for form, needle in forms.items():
                self.needles.setdefault(needle.encode(), (name, form))

    def find(self, where: str, data: str | bytes) -> list[str]:
        raw = data.encode(errors="replace") if isinstance(data, str) else data
        found = []
        for needle, (name, form) in self.needles.items():
            at = raw.find(needle)
            if at >= 0:
                found.append(f"{name} ({form}) in {where}: {self._context(raw, at, needle)}")
        return found

    def _context(self, raw: bytes, at: int, needle: bytes) -> str:
        """Up to 70 characters before and 110 after, every secret replaced by its name."""
        start = max(0, at - 300)
        window = raw[start:at] + b"\x00MARK\x00" + raw[at + len(needle):at + len(needle) + 300]
        for other, (name, _) in self.needles.items():
            window = window.replace(other, f"<{name}>".encode())
        for prefix, name in self.prefixes.items():  # in a form not looked for
            window = window.replace(prefix, f"<{name}...>".encode())
        mark = window.index(b"\x00MARK\x00")
        shown = window[max(0, mark - 70):mark] + f"<{self.needles[needle][0]}>".encode() \
            + window[mark + 6:mark + 116]
        return repr(shown.decode(errors="replace"))


def _leaks(found: Iterable[str]) -> str:
    found = list(found)
    return f"{len(found)} leak(s):\n" + "\n".join(line[:400] for line in found[:40])


class CommandLines:
    """Samples, every ``period_s``, the command line (/proc/<pid>/cmdline) of every process
    the stack started: those whose environment names its data directory, those of its pid
    files and their descendants (including processes that left their parent, like the
    model services)."""

    def __init__(self, data_dir: Path, period_s: float = 1.0) -> None:
        self.data_dir, self.period_s = str(data_dir), period_s
        self.seen: dict[tuple[int, str], list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def sample(self) -> None:
        roots = set()
        for pid_file in Path(self.data_dir).glob("**/*.pid"):
            try:
                roots.add(int(pid_file.read_text().strip()))
            except (OSError, ValueError):
                pass
        for process in psutil.process_iter():
            try:
                ours = (process.pid in roots
                        or process.environ().get("MLOPS_DATA_DIR") == self.data_dir)
                if not ours:
                    continue
                for member in [process, *process.children(recursive=True)]:
                    line = member.cmdline()
                    if line:  # an exited, unreaped child has none (nothing to leak)
                        self.seen.setdefault((member.pid, " ".join(line)[:60]), line)
            except (psutil.Error, OSError):
                continue


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The production stack with known secrets, after one served pipeline run, a refused
    run and a CI deploy."""
    root = tmp_path_factory.mktemp("secretscan")
    own = {"MLOPS_PG_PASSWORD": _sekrit("pg"), "MLOPS_PG_ADMIN_PASSWORD": _sekrit("pgadmin"),
           "MLOPS_REDIS_PASSWORD": _sekrit("redis"), "MLOPS_AUDIT_KEY": _sekrit("audit"),
           "AWS_SECRET_ACCESS_KEY": _sekrit("aws")}
    (root / "redis").mkdir()
    redis_server = RedisServer(root / "redis", password=own["MLOPS_REDIS_PASSWORD"])
    redis_server.start()
    try:
        with moto_s3(root / "moto.log") as s3, postgres_tenant() as tenant, \
                CommandLines(root / "data") as watch:
            extra = {**AWS, **tenant, **own, "MLOPS_PROFILE": "production",
                     "MLOPS_S3_ENDPOINT_URL": s3.endpoint, "MLOPS_S3_BUCKET": BUCKET,
                     "MLOPS_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
                     "MLOPS_SERVE_PORT": str(free_port()),
                     "PREFECT_WORKER_QUERY_SECONDS": "2"}
            with running_stack(root, **extra) as stack:
                try:
                    yield _exercise(stack, root, s3.endpoint, watch)
                finally:
                    _stop_services(stack["env"])
    finally:
        redis_server.stop()


def _exercise(stack: dict, root: Path, endpoint: str, watch: CommandLines) -> dict:
    """One pipeline run to a served model, a run the platform refuses and CI's deploy of
    the pinned commit, at the same time; what each left."""
    env, client = stack["env"], stack["client"]
    data = root / "panel.parquet"
    generate_panel(n_entities=40, n_periods=6, seed=5).to_parquet(data, index=False)
    key = f"datasets-in/default/{PANEL}/panel.parquet"  # team default's own prefix
    _s3(endpoint, env).upload_file(str(data), BUCKET, key)
    spec = synthetic_spec(f"s3://{BUCKET}/{key}", name=PANEL)
    params = {"spec": spec.model_dump(mode="json"), "team": "default"}
    served = deploy_from_checkout(client, "training-pipeline",
                                  "flows/training_pipeline.py:training_pipeline",
                                  "secret-scan", "gpu", "default", {"params": params},
                                  tags=["team:default"])
    refused = deploy_from_checkout(client, "training-pipeline",
                                   "flows/training_pipeline.py:training_pipeline",
                                   "secret-scan-refused", "cpu", "default",
                                   {"params": params}, tags=["team:default"])
    ci = _start_ci_deploy(stack, root)
    run = client.post(f"/deployments/{served}/create_flow_run", {"parameters": {"params": {
        **params, "model": {"epochs": 2}, "deploy": True}}, "idempotency_key": PANEL})
    assert run.status_code == 201, run.text
    outside = {**params, "spec": {**params["spec"], "path": "file:///etc/shadow"},
               "deploy": False}
    bad = client.post(f"/deployments/{refused}/create_flow_run",
                      {"parameters": {"params": outside}, "idempotency_key": "outside"})
    finished = wait_final(client, run.json()["id"], timeout_s=420)
    ci.wait(timeout=300)
    assert bad.status_code == 201, bad.text
    refused_run = wait_final(client, bad.json()["id"], timeout_s=120)
    watch.sample()
    ci_out = "".join((root / f"ci.{name}").read_text() for name in ("out", "err"))
    return {**stack, "run": finished, "refused": refused_run, "s3": endpoint, "watch": watch,
            "ci": (ci.returncode, ci_out), "data_dir": Path(env["MLOPS_DATA_DIR"]),
            "redis_dir": root / "redis", "scanner": _scanner(stack)}


def _start_ci_deploy(stack: dict, root: Path) -> subprocess.Popen:
    """The deploy workflow's command, with CI's secrets and the commit that passed CI."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    command = workflow["jobs"]["deploy"]["steps"][-1]["run"]
    env = {**stack["env"], "PREFECT_API_URL": stack["api"],
           "PREFECT_API_KEY": ":".join(credentials(stack, "ci")),
           "MLOPS_GIT_REPOSITORY": "https://example.invalid/mlops.git",
           "MLOPS_GIT_COMMIT": COMMIT,
           "PATH": f"{Path(sys.executable).parent}:{stack['env']['PATH']}"}
    with (root / "ci.out").open("w") as out, (root / "ci.err").open("w") as err:
        return subprocess.Popen(command, shell=True, cwd=ROOT, env=env, stdout=out, stderr=err)


def _scanner(stack: dict) -> Scanner:
    """Every secret `up` was given (its own and the services'), and the model services'
    admin tokens; identities' secrets are also looked for as ``name:secret``."""
    from infra.credentials import MLFLOW_ADMIN
    from infra.mlflow_users import ADMIN as MLFLOW_ADMIN_USER
    from mlops.config import mlflow_password_variable, mlflow_username
    from mlops.governance.identities import load_governance

    values = dict(stack["secrets"])
    values |= {name: value for name, value in stack["env"].items()
               if SECRET_NAME.search(name) and name not in NOT_SECRET and len(value) >= 8
               and name.startswith(("MLOPS_", "AWS_", "PREFECT_", "MLFLOW_"))}
    data_dir = Path(stack["env"]["MLOPS_DATA_DIR"])
    for token in sorted(data_dir.glob("service/*/admin-token")):
        values[f"admin token of {token.parent.name}"] = token.read_text().strip()
    governance = load_governance(stack["teams"])
    accounts = {identity.credential[4:]: name for name, identity
                in governance.identities.items() if identity.credential.startswith("env:")}
    accounts |= {mlflow_password_variable(team): mlflow_username(team)
                 for team in governance.teams}
    return Scanner(values, {**accounts, MLFLOW_ADMIN: MLFLOW_ADMIN_USER})


def _s3(endpoint: str, env: dict[str, str]) -> Any:  # a boto3 S3 client
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _stop_services(env: dict[str, str]) -> None:
    """The model services the deploy stage started (`make down` leaves them)."""
    from mlops.processes import stop_background

    for pid_file in Path(env["MLOPS_DATA_DIR"]).glob("service/*/service.pid"):
        stop_background(pid_file)


def _as_platform(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        if key.startswith(("MLOPS_", "AWS_")):
            monkeypatch.setenv(key, value)


def test_the_scan_finds_each_form_and_never_shows_a_secret(tmp_path: Path) -> None:
    """The scan's own check, without the stack: a process of the data directory with a
    secret in its arguments is seen, and each form of a secret is found and masked."""
    value, other = _sekrit("probe") + "/x+y", _sekrit("other")
    scanner = Scanner({"PROBE": value, "OTHER": other}, {"PROBE": "bot"})
    pair = base64.b64encode(f"bot:{value}".encode()).decode()
    text = f"x --password={quote(value)} Basic {pair} {other} {value}"
    found = scanner.find("a probe", text)
    assert len(found) == 4 and all(value not in line and other not in line for line in found)
    assert "PROBE (base64 of name:secret) in a probe" in "\n".join(found)
    data_dir = tmp_path / "data"
    with CommandLines(data_dir, period_s=0.1) as watch:
        probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", value],
                                 env={"MLOPS_DATA_DIR": str(data_dir), "PATH": "/usr/bin"})
        try:
            time.sleep(1.0)
            watch.sample()
        finally:
            probe.kill()
            probe.wait()
    lines = ["\0".join(line) for line in watch.seen.values()]
    assert any(scanner.find("the probe's command line", line) for line in lines), lines


def test_the_pipeline_ran_and_ci_deployed_the_commit_that_passed_ci(scan: dict) -> None:
    """The fixture's work happened (else the scans below prove little), and every
    deployment CI made clones the exact commit the workflow passed."""
    assert scan["run"]["state"]["type"] == "COMPLETED", scan["run"]["state"]
    known = {name for name, _ in scan["scanner"].needles.values()}
    assert {"MLOPS_PREFECT_SERVER_AUTH", "MLOPS_GATEWAY_SESSION_KEY", "MLOPS_SECRET_OPS",
            "MLOPS_SECRET_CI", "MLOPS_PG_PASSWORD", "MLOPS_PG_ADMIN_PASSWORD",
            "MLOPS_REDIS_PASSWORD", "MLOPS_AUDIT_KEY", "AWS_SECRET_ACCESS_KEY",
            "MLOPS_MLFLOW_ADMIN_PASSWORD"} <= known, sorted(known)
    assert any(name.startswith("admin token of ") for name in known), sorted(known)
    assert list(scan["data_dir"].glob("service/*/admin-token")), "no model was served"
    code, output = scan["ci"]
    assert code == 0, output[-4000:]
    deployed = [d for d in scan["client"].post("/deployments/filter", {}).json()
                if d["version"] == COMMIT]
    assert len(deployed) == 16, [d["name"] for d in deployed]  # prefect.yaml's sixteen
    for deployment in deployed:
        clone = deployment["pull_steps"][0]["prefect.deployments.steps.git_clone"]
        assert (clone["commit_sha"], clone["repository"]) == (
            COMMIT, "https://example.invalid/mlops.git"), deployment["name"]
    workflow = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    assert workflow["jobs"]["deploy"]["needs"] == "test"
    assert workflow["jobs"]["deploy"]["steps"][-1]["env"]["MLOPS_GIT_COMMIT"] == \
        "${{ github.sha }}"


def test_no_secret_in_the_prefect_api(scan: dict) -> None:
    """Run parameters and states, task runs, logs, artifacts, events, deployments, pools,
    queues, variables, blocks, automations, limits and the server's settings, read as an
    admin through the gateway."""
    found, kinds = [], Counter()
    for where, document in _prefect_documents(scan["client"]):
        kinds[where.split(" ")[1]] += 1
        found += scan["scanner"].find(where, json.dumps(document))
    assert min(kinds[kind] for kind in ("/flow_runs", "/task_runs", "/logs", "/artifacts",
                                        "/deployments", "/work_pools", "event")) > 0, kinds
    assert not found, _leaks(found)


def _prefect_documents(client: PrefectApi) -> Iterator[tuple[str, Any]]:
    for kind in ("flow_runs", "task_runs", "logs", "artifacts", "deployments", "flows",
                 "work_pools", "work_queues", "variables", "block_documents", "automations",
                 "v2/concurrency_limits", "concurrency_limits"):
        for offset in range(0, 20_000, 200):
            response = client.post(f"/{kind}/filter", {"limit": 200, "offset": offset})
            assert response.status_code == 200, (kind, response.text[:500])
            page = response.json()
            for item in page:
                yield f"Prefect /{kind} {item.get('name') or item.get('id')}", item
            if len(page) < 200:
                break
    events = client.post("/events/filter", {"limit": 50})
    assert events.status_code == 200, events.text[:500]
    page = events.json()
    for _ in range(40):
        for event in page["events"]:
            yield f"Prefect event {event['event']} {event['id']}", event
        if not page.get("next_page"):
            break
        page = client.get(f"/events/filter/next?{page['next_page'].split('?', 1)[1]}")
    for path in ("/admin/settings", "/admin/version", "/csrf-token?client=scan"):
        response = client.call("GET", path)
        yield f"Prefect GET {path}", response.text


def test_no_secret_in_the_ui_pages(scan: dict) -> None:
    """The Prefect UI's pages (HTML) and settings through the gateway, its login page, and
    MLflow's UI page."""
    gateway = scan["client"].root
    run_id = scan["run"]["id"]
    found = []
    with httpx.Client(base_url=gateway, auth=scan["auth"], timeout=30,
                      follow_redirects=True) as browser:
        for path in ("/", "/runs", f"/runs/flow-run/{run_id}", "/deployments",
                     "/work-pools", "/ui-settings", "/gateway/whoami"):
            page = browser.get(path, headers={"accept": "text/html,application/json"})
            assert page.status_code == 200, (path, page.status_code)
            found += scan["scanner"].find(f"UI page {path}", page.text)
            found += scan["scanner"].find(f"UI page {path} headers", str(page.headers))
    login = httpx.get(f"{gateway}/login", timeout=30)
    found += scan["scanner"].find("the login page", login.text)
    mlflow = httpx.get(f"http://127.0.0.1:{scan['env']['MLOPS_MLFLOW_PORT']}/", timeout=30)
    found += scan["scanner"].find("MLflow's UI page", mlflow.text)
    for port in scan["data_dir"].glob("service/*/port"):
        service = f"http://127.0.0.1:{port.read_text().strip()}"
        for path in ("/v1/model", "/v2/health/ready", "/metrics"):
            answer = httpx.get(f"{service}{path}", timeout=30)
            assert answer.status_code == 200, (path, answer.text[:300])
            found += scan["scanner"].find(f"the model service's {path}", answer.text)
    assert not found, _leaks(found)


def test_no_secret_in_mlflow(scan: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every experiment, run (params, tags, inputs), logged model, registered model and
    version (tags, source, description) on the tracking server."""
    client = _mlflow_client(scan, monkeypatch)
    found, runs = [], 0
    for experiment in client.search_experiments():
        found += scan["scanner"].find(f"MLflow experiment {experiment.name}",
                                      json.dumps(dict(experiment), default=str))
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            runs += 1
            found += scan["scanner"].find(f"MLflow run {run.info.run_id} params/tags",
                                          json.dumps(run.to_dictionary(), default=str))
    assert runs >= 1, "the pipeline left no MLflow run"
    for model in client.search_registered_models():
        found += scan["scanner"].find(f"MLflow registered model {model.name}",
                                      json.dumps(dict(model), default=str))
        for version in client.search_model_versions(f"name='{model.name}'"):
            found += scan["scanner"].find(
                f"MLflow model version {model.name}/{version.version} tags",
                json.dumps(dict(version), default=str))
    assert not found, _leaks(found)


def _mlflow_client(scan: dict, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the stack's tracking server as MLflow's basic-auth admin (who reads
    everything), else anonymous."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from infra.credentials import MLFLOW_ADMIN
    from infra.mlflow_users import ADMIN

    env = scan["env"]
    logins: list[tuple[str, str] | None] = [None]
    if env.get(MLFLOW_ADMIN):
        logins.insert(0, (ADMIN, env[MLFLOW_ADMIN]))
    url = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    for login in logins:
        for variable, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
                                   login or ("", ""), strict=True):
            monkeypatch.setenv(variable, value) if value else monkeypatch.delenv(
                variable, raising=False)
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        try:
            client.search_experiments(max_results=1)
            return client
        except MlflowException as exc:
            if "401" not in str(exc) and "403" not in str(exc):
                raise
    pytest.fail("no credentials found that the MLflow server accepts")


def test_no_secret_in_the_object_store_or_the_audit_table(scan: dict) -> None:
    """What the platform wrote to S3 (datasets, features, MLflow's artifacts) and the audit
    records in PostgreSQL."""
    import psycopg2

    s3, found = _s3(scan["s3"], scan["env"]), []
    listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    written = [item["Key"] for item in listing if not item["Key"].startswith("datasets-in/")]
    assert any(key.endswith("model.onnx") for key in written), written
    for key in written:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        found += scan["scanner"].find(f"s3://{BUCKET}/{key}", body)
    env = scan["env"]
    with psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                          dbname=f"{env['MLOPS_PG_DATABASE_PREFIX']}_audit") as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT * FROM audit_records ORDER BY seq")
            records = cursor.fetchall()
    assert records, "nothing was audited"
    for record in records:
        found += scan["scanner"].find(f"audit record {record[0]}", repr(record))
    assert not found, _leaks(found)


def test_no_secret_in_rendered_files(scan: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Kubernetes job templates rendered with every secret in the environment (as a
    worker holds them), and Feast's config rendered for the production profile."""
    from infra.job_templates import render_job
    from mlops.config import Settings
    from mlops.features.store import render_store_yaml

    _as_platform(monkeypatch, scan["env"])
    for name, value in scan["secrets"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", scan["secrets"]["MLOPS_PREFECT_SERVER_AUTH"])
    found = []
    for pool in ("gpu", "cpu"):
        manifest = render_job(ROOT / "infra" / "k8s" / f"{pool}-base-job-template.json", {})
        found += scan["scanner"].find(f"the {pool} pool's rendered Kubernetes job",
                                      json.dumps(manifest))
    spec = synthetic_spec(f"s3://{BUCKET}/datasets-in/default/{PANEL}/", name=PANEL)
    rendered = render_store_yaml(spec, scan["data_dir"] / "features" / PANEL, Settings())
    assert "${MLOPS_REDIS_PASSWORD}" in rendered and "${MLOPS_PG_PASSWORD}" in rendered
    found += scan["scanner"].find("the rendered feature_store.yaml", rendered)
    for manifest in sorted((ROOT / "infra" / "k8s").glob("**/*.yaml")):
        found += scan["scanner"].find(str(manifest.relative_to(ROOT)), manifest.read_bytes())
    assert not found, _leaks(found)


def test_no_secret_in_error_messages(scan: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals and failures: another identity's secret as a wrong password (API and login
    page), an unknown user, a run refused for its dataset's location, a deploy of a model
    that does not exist, an unreachable Redis, CI's deploy output."""
    from infra.production import ServiceUnreachable, check_redis
    from mlops.config import Settings
    from mlops.pipeline.stages import deploy_stage

    gateway, found = scan["client"].root, []
    ops, nora = credentials(scan, "ops"), credentials(scan, "nora")
    for auth in (("ops", nora[1]), ("nobody", ops[1]), (ops[1], ops[1])):
        response = httpx.post(f"{gateway}/api/flow_runs/filter", json={}, auth=auth,
                              timeout=30)
        assert response.status_code == 401, response.text
        found += scan["scanner"].find(f"the gateway's 401 for {auth[0][:3]}...",
                                      response.text + str(response.headers))
    login = httpx.post(f"{gateway}/login", data={"username": "ops", "password": nora[1],
                                                 "next": "/"}, timeout=30)
    assert login.status_code == 401, login.status_code
    found += scan["scanner"].find("the login page's refusal", login.text + str(login.headers))
    refused = scan["refused"]["state"]
    assert refused["type"] == "FAILED" and "/etc/shadow" in refused["message"], refused
    found += scan["scanner"].find("the refused run's state", json.dumps(refused))
    found += scan["scanner"].find("CI's deploy output", scan["ci"][1])
    found += scan["scanner"].find("what `make up` printed", scan["up"])
    found += _mlflow_refusal(scan, nora[1])
    _as_platform(monkeypatch, scan["env"])
    missing = synthetic_spec(f"s3://{BUCKET}/datasets-in/default/{PANEL}/",
                             name="no_such_model")
    with pytest.raises(Exception) as failed:  # whichever: its message counts
        deploy_stage(missing, Settings(), "default")
    found += scan["scanner"].find("the failed deploy's error", "".join(
        traceback.format_exception(failed.value)))
    monkeypatch.setenv("MLOPS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ServiceUnreachable) as unreachable:
        check_redis(Settings())
    found += scan["scanner"].find("the unreachable Redis's error", str(unreachable.value))
    assert not found, _leaks(found)


def _mlflow_refusal(scan: dict, wrong: str) -> list[str]:
    """MLflow's answer to a team user with another identity's secret as its password."""
    from mlops.config import mlflow_username

    url = f"http://127.0.0.1:{scan['env']['MLOPS_MLFLOW_PORT']}"
    response = httpx.get(f"{url}/api/2.0/mlflow/experiments/search", params={
        "max_results": 1}, auth=(mlflow_username("default"), wrong), timeout=30)
    assert response.status_code == 401, response.text
    return scan["scanner"].find("MLflow's 401", response.text + str(response.headers))


def test_no_secret_in_logs_or_files_under_the_data_directory(scan: dict) -> None:
    """Every file the platform wrote (service and run logs, hand-overs, Feast configs,
    Prefect's home, model service folders) and Redis's store, except the secret stores
    named in SECRET_STORES. Runs after the tests above, whose failures are logged too."""
    data_dir, found, scanned = scan["data_dir"], [], 0
    skipped = {path for pattern in SECRET_STORES for path in data_dir.glob(pattern)}
    for folder in (data_dir, scan["redis_dir"]):
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path in skipped:
                continue
            scanned += 1
            found += scan["scanner"].find(str(path.relative_to(folder.parent)),
                                          path.read_bytes())
    logs = {path.name for path in data_dir.glob("platform/*.log")}
    assert {"prefect-server.log", "prefect-gateway.log", "mlflow-server.log",
            "worker-gpu.log"} <= logs, logs
    assert scanned > 20, scanned
    assert not found, _leaks(found)


def test_no_secret_on_any_command_line(scan: dict) -> None:
    """/proc/<pid>/cmdline of every process the stack started, sampled every second from
    before `up` until now (servers, gateway, workers, controller, flow runs, Dask, model
    services, `up` and CI's deploy)."""
    watch: CommandLines = scan["watch"]
    watch.sample()
    names = {" ".join(line)[:200] for line in watch.seen.values()}
    for wanted in ("prefect server start", "infra.gateway", "mlflow server", "worker start",
                   "flows.fairshare_controller", "mlops.serving"):
        assert any(wanted in name for name in names), (wanted, sorted(names))
    found = []
    for (pid, _), line in sorted(watch.seen.items()):
        found += scan["scanner"].find(f"the command line of pid {pid} ({Path(line[0]).name} "
                                      f"{' '.join(line[1:4])[:80]}...)", "\0".join(line))
    assert not found, _leaks(found)
