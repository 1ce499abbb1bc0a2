"""What `make run` does, as a user runs it: the CLI in a fresh process on a small dataset."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from benchmarks.synthetic import generate_panel, synthetic_spec

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_run_serves_a_prediction_then_stop_stops_it(tmp_path: Path, port: int) -> None:
    data = tmp_path / "panel.csv"
    generate_panel(n_entities=50, n_periods=6, seed=3).to_csv(data, index=False)
    spec_path = tmp_path / "spec.yaml"
    spec = synthetic_spec(str(data), name="e2e_panel").model_dump(mode="json")
    spec_path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "MLOPS_DATA_DIR": str(tmp_path / "data"),
           "MLOPS_SERVE_PORT": str(port), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the embedded server, as on a fresh machine

    run = _cli(["run", "--spec", str(spec_path), "--epochs", "3"], env)
    assert run.returncode == 0, run.stderr[-3000:]
    endpoint = f"http://127.0.0.1:{port}"
    # The team default's model of the dataset: <team>.<dataset>.
    assert "model default.e2e_panel v1 aliases challenger,champion" in run.stdout
    assert f"service (champion v1): {endpoint}" in run.stdout
    assert "prediction by entity entity_id=" in run.stdout
    assert f"try it: curl -s -X POST {endpoint}/v1/predict" in run.stdout
    curl_body = run.stdout.split("-d '", 1)[1].split("'", 1)[0]
    answer = httpx.post(f"{endpoint}/v1/predict", content=curl_body,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 200 and 0.0 <= answer.json()["predictions"][0] <= 1.0

    stop = _cli(["stop"], env)
    assert stop.returncode == 0 and "service stopped" in stop.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{endpoint}/v2/health/live", timeout=2.0)


def test_run_names_a_broken_spec(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("name: x\npath: nowhere.csv\n")
    run = _cli(["run", "--spec", str(spec_path)], {**os.environ,
                                                   "MLOPS_DATA_DIR": str(tmp_path / "d")})
    assert run.returncode == 2
    assert "entity" in run.stderr and "Field required" in run.stderr
