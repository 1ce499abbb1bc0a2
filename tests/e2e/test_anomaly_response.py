"""Anomaly detection on the real stack: a training run throttled on purpose (its process
stopped, as a frozen cgroup or a hung data loader would leave it) stops making progress;
Prometheus sees it through the node exporter, the anomaly-check flow flags the stall as an
event on the run, the notification automation posts it to a webhook through its Prefect
block, and past the grace period the cancel automation cancels the run."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port, wait_for
from tests.e2e.stack import deploy_from_checkout, running_stack, wait_final

pytestmark = pytest.mark.slow
WORKLOAD = "tests/e2e/training_workload.py:long_training"
CHECK = "flows/anomaly_check.py:anomaly_check"
REPORT = "flows/utilisation_report.py:utilisation_report"


class Webhook:
    """A receiver for the notification block's POSTs."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    webhook = Webhook()
    try:
        with running_stack(tmp_path_factory.mktemp("anomaly"),
                           MLOPS_ALERT_WEBHOOK_URL=webhook.url) as platform:
            yield {**platform, "webhook": webhook}
    finally:
        webhook.server.shutdown()


def flow_run_process(run_id: str) -> psutil.Process | None:
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("PREFECT__FLOW_RUN_ID") == run_id:
                return process
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return None


def prometheus_has(stack: dict, query: str) -> list:
    url = f"http://127.0.0.1:{stack['env']['MLOPS_PROMETHEUS_PORT']}/api/v1/query"
    return httpx.get(url, params={"query": query}, timeout=10).json()["data"]["result"]


def test_a_throttled_training_run_is_flagged_notified_and_cancelled(stack: dict) -> None:
    client = stack["client"]
    assert "create automation 'mlops: notify on anomalies'" in stack["up"], stack["up"]
    training = deploy_from_checkout(client, "long-training", WORKLOAD, "long-training", "gpu",
                                    "default", {"team": "default", "epochs": 10_000,
                                                "folder": str(stack["root"] / "work")})
    check = deploy_from_checkout(client, "anomaly-check", CHECK, "anomaly-check", "cpu",
                                 "default", {})
    run = client.post(f"/deployments/{training}/create_flow_run", {}).json()["id"]
    progress = f'mlops_training_progress_timestamp_seconds{{run="{run}"}}'
    # Training, tracked and exported: Prometheus has the run's series from the node exporter.
    try:
        wait_for(lambda: prometheus_has(stack, f"count_over_time({progress}[1m]) >= 5"), 240.0,
                 "the run's series in Prometheus")
    except AssertionError:
        data = Path(stack["env"]["MLOPS_DATA_DIR"])
        state = client.get(f"/flow_runs/{run}")["state"]
        logs = client.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run]}}}).json()
        raise AssertionError(f"{state}\n{list((data / 'monitoring').rglob('*'))}\n"
                             f"{[entry['message'][:300] for entry in logs][-15:]}") from None
    process = wait_for(lambda: flow_run_process(run), 30.0, "the run's process")
    process.send_signal(signal.SIGSTOP)  # throttled to nothing: no epoch finishes
    try:
        stalled = f"time() - {progress} > 25"
        wait_for(lambda: prometheus_has(stack, stalled), 90.0, "a stall Prometheus can see")
        parameters = {"params": {"window_s": 600, "interval_s": 600, "grace_s": 10,
                                 "thresholds": {"stall_min_s": 10}}}
        looked = client.post(f"/deployments/{check}/create_flow_run",
                             {"parameters": parameters}).json()["id"]
        assert wait_final(client, looked, 240.0)["state"]["type"] == "COMPLETED"
        events = client.post("/events/filter", {"filter": {
            "event": {"prefix": ["mlops.anomaly."]},
            "resource": {"id": [f"prefect.flow-run.{run}"]}}}).json()["events"]
        names = {event["event"] for event in events}
        assert {"mlops.anomaly.run-stalled",
                "mlops.anomaly.run-stalled.grace-exceeded"} <= names, names
        wait_for(lambda: any(run in json.dumps(body) for body in stack["webhook"].bodies),
                 120.0, "the webhook's notification")
        wait_for(lambda: client.get(f"/flow_runs/{run}")["state"]["type"]
                 in ("CANCELLING", "CANCELLED"), 120.0, "the cancel automation")
    finally:
        if process.is_running():
            os.kill(process.pid, signal.SIGCONT)
    assert wait_final(client, run, 120.0)["state"]["type"] == "CANCELLED"
    # The run's series are gone with it: a cancelled run is not stalled for ever.
    folder = Path(stack["env"]["MLOPS_DATA_DIR"]) / "monitoring" / "textfile"
    wait_for(lambda: not list(folder.glob(f"*{run}*.prom")), 60.0, "the run's series removed")


def test_the_report_draws_the_dashboards_from_prometheus(stack: dict) -> None:
    """The utilisation report on the same stack: a PNG file per dashboard and an artifact
    with the image and each series' last and peak values, from Prometheus alone."""
    client = stack["client"]
    report = deploy_from_checkout(client, "utilisation-report", REPORT, "utilisation-report",
                                  "cpu", "default", {})
    parameters = {"params": {"hours": 0.25, "step_s": 5}}
    run = client.post(f"/deployments/{report}/create_flow_run",
                      {"parameters": parameters}).json()["id"]
    assert wait_final(client, run, 240.0)["state"]["type"] == "COMPLETED"
    folder = Path(stack["env"]["MLOPS_DATA_DIR"]) / "monitoring" / "reports"
    images = {path.name.split("-")[0]: path for path in folder.glob("*.png")}
    assert set(images) == {"platform", "serving"}, images
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in images.values())
    found = client.post("/artifacts/filter", {"artifacts": {
        "key": {"any_": ["report-platform"]}, "flow_run_id": {"any_": [run]}}}).json()
    markdown = found[0]["data"]
    assert "data:image/png;base64," in markdown
    # The throttled run of the test before is in the table, read back from Prometheus.
    rows = [line for line in markdown.splitlines() if line.startswith("| Training throughput |")]
    assert rows and "no data" not in rows[0], markdown[-3000:]
