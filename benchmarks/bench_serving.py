"""`make bench-serving`: the inference service and its baselines side by side, under load.

Measured, for the pipeline's registered model (models:/default.wage_panel@champion), with
the same rows of its dataset: requests/s, p50 and p99 latency and errors (non-2xx/3xx,
socket errors, timeouts, gRPC calls without a reply) at concurrency 1 and 16, of

- our service with micro-batching on (JSON, binary tensor and gRPC requests of 1 and 64
  rows, and predict-by-entity), with it off, with TLS (one row, c16), and with a
  challenger in shadow on every call (the champion itself as challenger; 1 row, c16);
- KServe's ModelServer serving the same ONNX file (``benchmarks.kserve_server``), REST
  and gRPC; ``mlflow models serve`` of the same registered model;
- the FastAPI floor (``benchmarks.http_floor``: the service's framework answering a
  constant) and the bare ASGI floor (``benchmarks.asgi_floor``: no framework) on uvicorn
  and on granian, and the bare gRPC floor (``benchmarks.grpc_floor``: grpc.aio answering
  a constant).

How: the pipeline runs once into a bench data directory (reused while it has a champion;
--fresh retrains). Every server is started at once on free loopback ports, each request
kind is checked with one request (one prediction per row, else the bench stops), then
``serving_load`` runs alternating rounds: every target ratio is one of medians of runs
that took turns on the same cores. gRPC and TLS rows of our service need its
``--grpc-port`` and ``--ssl-certfile``; without them the rows say n/a. Last, where the
time goes: ``profile_serving`` calls the apps in-process (no HTTP).

Targets (``serving_report.targets``) are judged after every table: exit status 1 when one
is missed. ``--quick``: a 2-epoch model in its own bench directory, one round of 1 s runs
without warm-up, a short profile; targets not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks import h2load, profile_serving, serving_load, serving_report, wrk
from benchmarks.servers import Running, Server, serving
from benchmarks.serving_requests import (
    BINARY_KINDS,
    GRPC_KINDS,
    ROW_COUNTS,
    Payloads,
    build,
)
from benchmarks.targets import conclude
from mlops.config import DEFAULT_SPEC, DatasetSpec, ModelSettings, Settings, load_spec
from mlops.registry import fetch_model, model_name

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
MODEL = model_name("default", "wage_panel")  # what `make run` registers (team default)
MODEL_URI = f"models:/{MODEL}@champion"
ROUNDS, SECONDS, WARMUP = 5, 2, 1
BENCH_DIR, QUICK_BENCH_DIR = REPO / "data" / "bench-serving", REPO / "data" / "bench-serving-quick"
QUICK_EPOCHS = 2
QUICK_PROFILE = {"rounds": 2, "calls": 50, "profile_calls": 100}
REST, BINARY, GRPC = tuple(ROW_COUNTS), tuple(BINARY_KINDS), tuple(GRPC_KINDS)
KIND_ORDER = [*REST, *BINARY, *GRPC, "entity"]
CERT_SUBJECT = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]

SERVICE = ("{python}", "-m", "mlops.serving", "--model-uri", MODEL_URI, "--tracking-uri",
           "{tracking}", "--spec", "{spec}", "--data-dir", "{data_dir}", "--host", "127.0.0.1",
           "--port", "{port}")
BASELINES = [
    Server("kserve", "KServe ModelServer", ("{python}", "-m", "benchmarks.kserve_server",
           "--onnx", "{onnx}", "--name", MODEL, "--port", "{port}", "--grpc-port",
           "{grpc_port}"), REST, GRPC),
    Server("mlflow", "mlflow models serve", ("{bin}/mlflow", "models", "serve", "-m",
           MODEL_URI, "--env-manager", "local", "--host", "127.0.0.1", "-p", "{port}"),
           REST, api="mlflow", ready="/ping"),
    Server("floor", "FastAPI floor", ("{python}", "-m", "benchmarks.http_floor", "--port",
           "{port}"), REST, constant=True),
    *(Server(f"asgi-{name}", f"bare ASGI floor, {name}", ("{python}", "-m",
             "benchmarks.asgi_floor", "--port", "{port}", "--server", name), REST,
             constant=True) for name in ("uvicorn", "granian")),
    # grpcio's asyncio server answering a constant: the ceiling of gRPC in Python.
    Server("grpc-floor", "bare gRPC floor, grpc.aio", ("{python}", "-m",
           "benchmarks.grpc_floor", "--port", "{port}", "--grpc-port", "{grpc_port}"), (),
           GRPC[:1], constant=True),
]
SERVER_KEYS = ["batching-on", "batching-off", "tls", "shadow", *(s.key for s in BASELINES)]


def define_servers(service_help: str) -> tuple[list[Server], list[dict[str, Any]]]:
    """Every server, in run order, given what our service's --help offers; and an n/a row
    for each run it cannot have (gRPC without --grpc-port, TLS without --ssl-certfile)."""
    grpc, tls = "--grpc-port" in service_help, "--ssl-certfile" in service_help
    servers = [
        Server("batching-on", "service, batching on",
               SERVICE + (("--grpc-port", "{grpc_port}") if grpc else ()),
               (*REST, *BINARY, "entity"), GRPC if grpc else ()),
        Server("batching-off", "service, batching off", (*SERVICE, "--batch-window-ms", "0"),
               (*REST, "entity")),
        Server("tls", "service, TLS", (*SERVICE, "--ssl-certfile", "{cert}", "--ssl-keyfile",
               "{key}"), ("1-row",), connections=(16,), tls=True),
        Server("shadow", "service, shadow on", (*SERVICE, "--challenger-uri", MODEL_URI,
               "--shadow-rate", "1"), ("1-row",), connections=(16,)),
        *BASELINES]
    skipped = [] if grpc else [
        {"key": "batching-on", "server": "service, batching on", "kind": kind,
         "connections": c, "skipped": "n/a (service has no --grpc-port)"}
        for kind in GRPC for c in (1, 16)]
    if not tls:
        servers = [s for s in servers if s.key != "tls"]
        skipped.append({"key": "tls", "server": "service, TLS", "kind": "1-row",
                        "connections": 16, "skipped": "n/a (service has no --ssl-certfile)"})
    return servers, skipped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=SECONDS,
                        help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="alternating rounds (each cell's numbers are medians of these)")
    parser.add_argument("--warmup", type=float, default=WARMUP,
                        help="seconds of warm-up before each cell's first run (0: none)")
    parser.add_argument("--bench-dir", type=Path,
                        help=f"default {BENCH_DIR} ({QUICK_BENCH_DIR} with --quick)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the bench directory and retrain the model")
    parser.add_argument("--servers", help="comma-separated subset of the server keys ("
                        + ", ".join(SERVER_KEYS) + "); default all")
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK_EPOCHS}-epoch model, one round of 1 s runs without "
                             "warm-up (overrides --duration, --rounds, --warmup); targets "
                             "not checked")
    args = parser.parse_args(argv)
    args.bench_dir = (args.bench_dir or (QUICK_BENCH_DIR if args.quick else BENCH_DIR)).resolve()
    if args.quick:
        args.duration, args.rounds, args.warmup = 1, 1, 0
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


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (P-256, one day): cert, key."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", *CERT_SUBJECT,
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def request_payloads(spec: DatasetSpec) -> Payloads:
    """Feature names and the first 64 rows of the dataset, and one existing entity id."""
    from mlops.data.loading import load_dataset

    frame = load_dataset(spec)
    names = list(spec.features)
    rows = frame[names].astype(float).to_numpy()[:max(ROW_COUNTS.values())].tolist()
    return Payloads(names, rows, frame[spec.entity].iloc[0].item())


def service_help() -> str:
    return subprocess.run([sys.executable, "-m", "mlops.serving", "--help"],
                          capture_output=True, text=True, check=False, cwd=REPO).stdout


def select(servers: list[Server], skipped: list[dict], chosen: str | None,
           ) -> tuple[list[Server], list[dict]]:
    """The servers and n/a rows of --servers' keys (all when not given)."""
    if chosen is None:
        return servers, skipped
    keys = chosen.split(",")
    if unknown := set(keys) - set(SERVER_KEYS):
        raise SystemExit(f"--servers: unknown {sorted(unknown)}; known: {SERVER_KEYS}")
    return ([s for s in servers if s.key in keys], [r for r in skipped if r["key"] in keys])


class Measured(NamedTuple):
    meta: dict[str, Any]
    rows: list[dict[str, Any]]  # one per server, request kind and concurrency (or n/a)
    profile: dict[str, Any]  # profile_serving.measure's


def setup(args: argparse.Namespace) -> tuple[Settings, dict[str, str], str]:
    """The champion (trained when missing), its ONNX file, a TLS certificate and what the
    server commands are filled with; the champion's version."""
    bench_dir = args.bench_dir
    os.environ["MLOPS_DATA_DIR"] = str(bench_dir)  # nothing touches the user's data/
    settings, spec = Settings(data_dir=bench_dir), load_spec(DEFAULT_SPEC)
    model = ModelSettings(epochs=QUICK_EPOCHS) if args.quick else ModelSettings()
    version = ensure_champion(settings, spec, args.fresh, model)
    onnx = fetch_model(settings.tracking, MODEL_URI, bench_dir / "onnx").path
    cert, key = make_certificate(bench_dir / "tls")
    # For mlflow models serve: the bench store, and the venv's bin first on PATH, since it
    # execs `uvicorn` by name.
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    fill = {"python": sys.executable, "bin": str(Path(sys.executable).parent),
            "tracking": settings.tracking, "spec": str(DEFAULT_SPEC), "data_dir": str(bench_dir),
            "onnx": str(onnx), "cert": str(cert), "key": str(key)}
    return settings, fill, version


def load(running: list[Running], payloads: Payloads, args: argparse.Namespace, logs: Path,
         verify: ssl.SSLContext) -> list[dict[str, Any]]:
    """Check every cell, run the alternating rounds, one row of medians per cell."""
    cells = [cell for server in running for cell in serving_load.prepare(
        server, [build(kind, server.server.api, MODEL, payloads)
                 for kind in (*server.server.kinds, *server.server.grpc_kinds)],
        logs, MODEL, verify)]
    print(f"{len(cells)} cells checked; {args.rounds} alternating round(s) of "
          f"{args.duration:g} s runs:", flush=True)
    samples = serving_load.run_rounds(cells, KIND_ORDER, args.rounds, args.duration,
                                      args.warmup, logs)
    return serving_load.summarise(cells, samples, serving_load.grpc_status_after(cells))


def http_server_of(running: list[Running]) -> str | None:
    """The HTTP server our service runs on, from its Server header (uvicorn, granian)."""
    service = next((r for r in running if r.server.key == "batching-on"), None)
    if service is None:
        return None
    answer = httpx.get(service.url + service.server.ready, timeout=10.0)
    return answer.headers.get("server", "").split("/")[0].lower() or None


def measure(args: argparse.Namespace) -> Measured:
    """Train (or reuse) the champion, load every server side by side, then profile."""
    settings, fill, version = setup(args)
    servers, skipped = select(*define_servers(service_help()), args.servers)
    logs = args.bench_dir / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    payloads = request_payloads(load_spec(DEFAULT_SPEC))
    verify = ssl.create_default_context(cafile=fill["cert"])
    print(f"starting {', '.join(s.name for s in servers)} ...", flush=True)
    with serving(servers, fill, logs, verify) as running:
        http_server = http_server_of(running)
        rows = load(running, payloads, args, logs, verify)
    meta = {"model": MODEL, "version": version, "cpus": os.cpu_count(), "loadavg": loadavg,
            "platform": platform.platform(), "wrk": wrk.version(), "h2load": h2load.version(),
            "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
            "quick": args.quick, "service_http_server": http_server}
    # The same 1-row request, in-process: where the service's time goes.
    profile = profile_serving.measure(profile_serving.load(settings.tracking, MODEL_URI),
                                      payloads.rows[:1], **(QUICK_PROFILE if args.quick else {}))
    return Measured(meta, in_order(rows + skipped), profile)


def in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by server (start order; n/a ones at their server), kind, concurrency."""
    return sorted(rows, key=lambda r: (SERVER_KEYS.index(r["key"]),
                                       KIND_ORDER.index(r["kind"]), r["connections"]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = measure(args)
    goals = serving_report.targets(run.rows, run.profile, run.meta.get("service_http_server"))
    serving_report.report(run.meta, run.rows)
    profile_serving.report(run.profile)
    out = args.bench_dir / "bench-serving.json"
    out.write_text(json.dumps({"meta": run.meta, "runs": run.rows, "profile": run.profile,
                               "targets": [{"target": g.name, "passed": g.passed,
                                            "detail": g.measured} for g in goals]}, indent=2))
    print(f"\nresults: {out}")
    return conclude(goals, args.quick, "## Targets\n")


if __name__ == "__main__":
    raise SystemExit(main())
