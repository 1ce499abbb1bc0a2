"""`make bench-serving`: load test of the CPU inference service with wrk, on loopback, one run.

Measured, for the pipeline's registered model (models:/default.wage_panel@champion): requests/s,
p50 and p99 latency and error count (non-2xx/3xx statuses, socket errors, timeouts) of
1-row and 64-row predict requests at concurrency 1 (wrk -t1 -c1) and 16 (wrk -t2 -c16), on
(1) our service with micro-batching on, (2) with it off (--batch-window-ms 0), (3) `mlflow
models serve` of the same registered model, (4) the HTTP floor (benchmarks/http_floor.py:
the same FastAPI/uvicorn stack answering a constant), plus predict-by-entity (Feast online
store) on our service. Our service and the floor get the Open Inference Protocol route,
mlflow its /invocations, all with the same rows of the dataset. Last, where the time goes:
``profile_serving`` calls the service's and the floor's ASGI apps in-process (no HTTP).

How: the pipeline runs once into a bench data directory (reused while it has a champion;
--fresh retrains). Each server then runs alone as a subprocess on a free loopback port, is
checked with one request per kind (200 and one prediction per row, else the bench stops),
and gets a warm-up run before each measured wrk run; then it is stopped before the next
starts. Every server runs with its own defaults (our service and mlflow write an access
log line per request, to the log file). Server and wrk share this machine's cores:
read ratios, not absolute numbers.

Targets (``serving_report.targets``) are judged after every table: exit status 1 when one
is missed. ``--quick``: a 2-epoch model in its own bench directory, 1 s runs without
warm-up, one side-by-side round, a short profile; targets not checked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks import profile_serving, servers, serving_report, wrk
from benchmarks.targets import conclude
from mlops.config import DEFAULT_SPEC, DatasetSpec, ModelSettings, Settings, load_spec
from mlops.registry import model_name

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
MODEL = model_name("default", "wage_panel")  # what `make run` registers (team default)
MODEL_URI = f"models:/{MODEL}@champion"
ROW_COUNTS = {"1-row": 1, "64-row": 64}
THREADS_BY_CONNECTIONS = {1: 1, 16: 2}
ENTITY_PATH = "/v1/predict/entity"
PAIRED_ROUNDS, PAIRED_SECONDS = 5, 3
BENCH_DIR, QUICK_BENCH_DIR = REPO / "data" / "bench-serving", REPO / "data" / "bench-serving-quick"
QUICK_EPOCHS = 2
QUICK_PROFILE = {"rounds": 2, "calls": 50, "profile_calls": 100}

# How each server is asked: readiness, predict route, request body encoding.
APIS: dict[str, dict[str, str]] = {
    "v2": {"ready": "/v2/health/ready", "predict": f"/v2/models/{MODEL}/infer", "body": "oip"},
    "v1": {"ready": "/v2/health/ready", "predict": "/v1/predict", "body": "records"},
    "mlflow": {"ready": "/ping", "predict": "/invocations", "body": "mlflow"},
}
SERVICE = ["{python}", "-m", "mlops.serving", "--model-uri", MODEL_URI, "--tracking-uri",
           "{tracking}", "--spec", "{spec}", "--data-dir", "{data_dir}", "--host", "127.0.0.1",
           "--port", "{port}"]
# The servers in run order; "api": "service" means the --service-api choice (v2 or v1).
SERVERS: list[dict[str, Any]] = [
    {"key": "batching-on", "name": "service, batching on", "command": SERVICE,
     "api": "service", "entity": True},
    {"key": "batching-off", "name": "service, batching off",
     "command": [*SERVICE, "--batch-window-ms", "0"], "api": "service", "entity": True},
    {"key": "mlflow", "name": "mlflow models serve", "api": "mlflow",
     "command": ["{bin}/mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
                 "--host", "127.0.0.1", "-p", "{port}"]},
    {"key": "floor", "name": "HTTP floor", "api": "service", "constant": True,
     "command": ["{python}", "-m", "benchmarks.http_floor", "--port", "{port}"]},
]


def oip_body(names: list[str], rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [len(rows), len(names)],
                        "datatype": "FP32", "data": [v for row in rows for v in row]}]}


def records_body(names: list[str], rows: list[list[float]]) -> dict[str, Any]:
    return {"records": [dict(zip(names, row, strict=True)) for row in rows]}


def mlflow_body(names: list[str], rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": {"features": rows}}  # the signature's one tensor input, by name


BODIES: dict[str, Callable[[list[str], list[list[float]]], dict[str, Any]]] = {
    "oip": oip_body, "records": records_body, "mlflow": mlflow_body}


def count_predictions(body: object) -> int:
    """Predictions in an OIP, /v1 or mlflow response body (0 when it holds none)."""
    if isinstance(body, dict) and body.get("outputs"):
        return len(body["outputs"][0].get("data", []))
    preds = body.get("predictions") if isinstance(body, dict) else None
    if isinstance(preds, dict):  # mlflow: {"predictions": {"<output>": [...]}}
        preds = next(iter(preds.values()), None)
    return len(preds) if isinstance(preds, list) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of warm-up per run (0: none)")
    parser.add_argument("--bench-dir", type=Path,
                        help=f"default {BENCH_DIR} ({QUICK_BENCH_DIR} with --quick)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the bench directory and retrain the model")
    parser.add_argument("--servers", default=",".join(s["key"] for s in SERVERS),
                        help="comma-separated subset of: %(default)s")
    parser.add_argument("--service-api", choices=["v2", "v1"], default="v2",
                        help="routes of our service and the floor (v1: /v1/predict records)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK_EPOCHS}-epoch model, 1 s runs without warm-up, one "
                             "paired round (overrides --duration, --warmup); targets not checked")
    args = parser.parse_args(argv)
    args.bench_dir = (args.bench_dir or (QUICK_BENCH_DIR if args.quick else BENCH_DIR)).resolve()
    args.paired_rounds, args.paired_seconds = (1, 1) if args.quick else (PAIRED_ROUNDS,
                                                                       PAIRED_SECONDS)
    if args.quick:
        args.duration, args.warmup = 1, 0
    return args


def ensure_champion(settings: Settings, spec: DatasetSpec, fresh: bool,
                    model: ModelSettings) -> str:
    """The champion's version; runs the pipeline (no deploy) when there is none yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlops.pipeline.stages import PipelineParams, run_stages

    if fresh:
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    client = MlflowClient(tracking_uri=settings.tracking, registry_uri=settings.tracking)
    if (settings.data_dir / "mlflow.db").exists():
        try:
            return str(client.get_model_version_by_alias(MODEL, "champion").version)
        except MlflowException:
            pass
    print(f"training and registering {MODEL} into {settings.data_dir} ...", flush=True)
    run_stages(PipelineParams(spec=spec, model=model, deploy=False), settings)
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def check(url: str, body: dict[str, Any], rows: int, constant: bool) -> None:
    """One request: 200 and one prediction per row (the floor: any), else stop loudly."""
    response = httpx.post(url, json=body, timeout=30.0)
    try:
        found = count_predictions(response.json())
    except ValueError:
        found = 0
    if response.status_code != 200 or found != rows and not (constant and found):
        raise SystemExit(f"POST {url} ({rows} rows): HTTP {response.status_code}, "
                         f"{found} predictions; body: {response.text[:500]}")


def load_runs(server: dict[str, Any], url: str, api: dict[str, str], payloads: dict,
              args: argparse.Namespace, scripts: Path) -> list[dict[str, Any]]:
    """Every request kind of one server at each concurrency: warm-up, then measure."""
    kinds = [(kind, api["predict"], BODIES[api["body"]](*payloads[kind]), count)
             for kind, count in ROW_COUNTS.items()]
    if server.get("entity"):
        kinds.append(("entity", ENTITY_PATH, payloads["entity"], 1))
    results = []
    for kind, path, body, count in kinds:
        check(url + path, body, count, server.get("constant", False))
        script = wrk.write_script(scripts / f"{server['key']}-{kind}.lua", json.dumps(body))
        for connections, threads in THREADS_BY_CONNECTIONS.items():
            if args.warmup:
                wrk.run(url + path, script, connections, threads, args.warmup)
            result = wrk.run(url + path, script, connections, threads, args.duration)
            results.append({"server": server["name"], "key": server["key"], "kind": kind,
                            "connections": connections, **result.as_dict()})
            print(f"  {kind:7} c{connections:<3} {result.rps:9.0f} req/s  "
                  f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms  "
                  f"errors {result.errors}", flush=True)
    return results


def paired(args: argparse.Namespace, payloads: dict, fill: dict[str, str],
           logs: Path) -> dict[str, dict[str, float]]:
    """Service (batching on) and floor both up, short c16 runs alternating: medians.

    The sequential table gives each server one run; on this shared machine one run can be
    20% off. Target (b) is a ratio, so it is measured here, side by side, in rounds.
    """
    pair = [next(s for s in SERVERS if s["key"] == key) for key in ("batching-on", "floor")]
    api = APIS[args.service_api]
    medians: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(servers.serving(s, api["ready"], fill, logs)) for s in pair]
        for kind in ROW_COUNTS:
            body = json.dumps(BODIES[api["body"]](*payloads[kind]))
            script = wrk.write_script(logs / f"paired-{kind}.lua", body)
            samples: dict[str, list[float]] = {s["key"]: [] for s in pair}
            for url in urls if args.warmup else []:
                wrk.run(url + api["predict"], script, 16, 2, args.warmup)
            for _ in range(args.paired_rounds):
                for server, url in zip(pair, urls, strict=True):
                    result = wrk.run(url + api["predict"], script, 16, 2, args.paired_seconds)
                    samples[server["key"]].append(result.rps)
            medians[kind] = {key: statistics.median(values) for key, values in samples.items()}
            print(f"  paired {kind}: service {medians[kind]['batching-on']:.0f} req/s, floor "
                  f"{medians[kind]['floor']:.0f} req/s (medians of {args.paired_rounds})",
                  flush=True)
    return medians


def check_features(url: str, names: list[str]) -> None:
    model = httpx.get(f"{url}/v1/model", timeout=10.0).json()
    if model.get("feature_names") != names:
        raise SystemExit(f"service features {model.get('feature_names')} != spec's {names}")


def request_payloads(spec: DatasetSpec) -> dict[str, Any]:
    """Feature names and rows of the dataset per row count, and one existing entity id."""
    from mlops.data.loading import load_dataset

    frame = load_dataset(spec)
    names = list(spec.features)
    values = frame[names].astype(float).to_numpy().tolist()
    payloads: dict[str, Any] = {kind: (names, values[:n]) for kind, n in ROW_COUNTS.items()}
    payloads["entity"] = {"entity_ids": [frame[spec.entity].iloc[0].item()]}
    return payloads


def run_servers(selected: list[dict[str, Any]], args: argparse.Namespace, payloads: dict,
                fill: dict[str, str], logs: Path) -> list[dict[str, Any]]:
    """Each server alone: start, check, load, stop."""
    rows: list[dict[str, Any]] = []
    for server in selected:
        api = APIS[args.service_api if server["api"] == "service" else server["api"]]
        print(f"{server['name']}: {api['predict']}", flush=True)
        with servers.serving(server, api["ready"], fill, logs) as url:
            if server.get("entity"):
                check_features(url, payloads["1-row"][0])
            rows += load_runs(server, url, api, payloads, args, logs)
    return rows


class Measured(NamedTuple):
    meta: dict[str, Any]
    rows: list[dict[str, Any]]  # one per server, request kind and concurrency
    pairs: dict[str, dict[str, float]] | None  # side by side: req/s by kind and server key
    profile: dict[str, Any]  # profile_serving.measure's


def measure(args: argparse.Namespace) -> Measured:
    """Train (or reuse) the champion, load-test each server, then profile in-process."""
    chosen = args.servers.split(",")
    selected = [s for s in SERVERS if s["key"] in chosen]
    if len(selected) != len(set(chosen)):
        raise SystemExit(f"--servers: unknown in {chosen}; known: {[s['key'] for s in SERVERS]}")
    bench_dir = args.bench_dir
    os.environ["MLOPS_DATA_DIR"] = str(bench_dir)  # nothing touches the user's data/
    settings, spec = Settings(data_dir=bench_dir), load_spec(DEFAULT_SPEC)
    model = ModelSettings(epochs=QUICK_EPOCHS) if args.quick else ModelSettings()
    version = ensure_champion(settings, spec, args.fresh, model)
    # For mlflow models serve: the bench store, and the venv's bin first on PATH, since it
    # execs `uvicorn` by name.
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    fill = {"python": sys.executable, "bin": str(Path(sys.executable).parent),
            "tracking": settings.tracking, "spec": str(DEFAULT_SPEC), "data_dir": str(bench_dir)}
    logs = bench_dir / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    payloads = request_payloads(spec)
    rows = run_servers(selected, args, payloads, fill, logs)
    meta = {"model": MODEL, "version": version, "cpus": os.cpu_count(), "loadavg": loadavg,
            "routes": f"our service and floor {APIS[args.service_api]['predict']}, mlflow "
                      f"{APIS['mlflow']['predict']}, entity {ENTITY_PATH}",
            "platform": platform.platform(), "wrk": wrk.version(), "duration_s": args.duration,
            "warmup_s": args.warmup, "service_api": args.service_api, "quick": args.quick,
            "paired_rounds": args.paired_rounds, "paired_seconds": args.paired_seconds}
    pairs = None
    if {"batching-on", "floor"} <= set(chosen):
        print("service and floor side by side, alternating:", flush=True)
        pairs = paired(args, payloads, fill, logs)
    # The same 1-row request, in-process: where the service's time goes.
    profile = profile_serving.measure(profile_serving.load(settings.tracking, MODEL_URI),
                                      payloads["1-row"][1],
                                      **(QUICK_PROFILE if args.quick else {}))
    return Measured(meta, rows, pairs, profile)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = measure(args)
    goals = serving_report.targets(run.rows, run.pairs)
    serving_report.report(run.meta, run.rows, run.pairs)
    profile_serving.report(run.profile)
    out = args.bench_dir / "bench-serving.json"
    out.write_text(json.dumps({"meta": run.meta, "runs": run.rows, "paired": run.pairs,
                               "targets": [{"target": g.name, "passed": g.passed,
                                            "detail": g.measured} for g in goals]}, indent=2))
    print(f"\nresults: {out}")
    return conclude(goals, args.quick, "## Targets\n")


if __name__ == "__main__":
    raise SystemExit(main())
