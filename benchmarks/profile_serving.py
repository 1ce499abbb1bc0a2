"""Where a request's time goes: CPU microseconds per request, in-process, without HTTP.

The service's ASGI app, the FastAPI floor's and the bare ASGI floor's are called directly
(the same ASGI messages uvicorn would send) in alternating rounds, so all see the same
machine; the medians are CPU time of the whole process (event loop and inference
threads). The bare floor is the zero of this harness (its own calls, nothing else), the
FastAPI floor what the framework alone costs, so the service's own work is its figure
less the bare floor's. Then one profile of the service's inference route, grouped by
package. HTTP parsing (uvicorn, httptools) is not in these numbers: it is the same for
every app on one server. Run by `make bench-serving` after the load test (its target
(e) judges the service with batching on, as deployed), or alone:
``python -m benchmarks.profile_serving --tracking-uri <uri>``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import uvicorn
import uvloop

from benchmarks import asgi_floor, http_floor, protocol_driver
from mlops.serving.access_log import AccessLog
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.model_manager import ModelManager, RegistrySource
from mlops.serving.server import uvicorn_config

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
ROUNDS, CALLS, PROFILE_CALLS = 9, 400, 1000


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def _call(app: Any, path: str, body: bytes) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope(path, body), receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"{path} answered {sent[0]['status']}: {sent[-1].get('body')}")


async def _cpu_per_call(work: Any, calls: int = CALLS) -> float:
    """CPU us per call, each call in its own event-loop iteration, as a server reads each
    request of one client from its socket in a new iteration (called back to back without
    one, every call after the first would find the batcher's iteration still open)."""
    start = time.process_time()
    for _ in range(calls):
        await work()
        await asyncio.sleep(0)
    return (time.process_time() - start) / calls * 1e6


def load(tracking_uri: str, model_uri: str) -> ModelManager:
    manager = ModelManager(RegistrySource(tracking_uri, model_uri))
    manager.refresh()
    return manager


def measure(manager: ModelManager, rows: list[list[float]], rounds: int = ROUNDS,
            calls: int = CALLS, profile_calls: int = PROFILE_CALLS) -> dict[str, Any]:
    """Median CPU us per call of each variant (alternating rounds), and the profile."""
    predictor = manager.current
    path = f"/v2/models/{predictor.name}/infer"
    body = orjson.dumps({"inputs": [{"name": "features", "shape": [len(rows), len(rows[0])],
                                     "datatype": "FP32", "data": sum(rows, [])}]})
    sink = open(os.devnull, "wb")  # the access log is written, then dropped
    apps = {"bare ASGI floor app": asgi_floor.app, "FastAPI floor app": http_floor.create_app(),
            "service, batching on": create_app(manager, None, ServingConfig(),
                                               AccessLog(sink)),
            "service, batching off": create_app(manager, None, ServingConfig(batch_window_ms=0),
                                                AccessLog(sink))}
    matrix, pool = np.asarray(rows, dtype=np.float32), ThreadPoolExecutor(1)
    # The same request as bytes through each server's HTTP protocol: the service's path
    # (its protocol and fast lane) and the bare floor's (uvicorn's own protocol).
    request = protocol_driver.post(path, body)
    wire = {"service, batching on, HTTP bytes in and out": uvicorn_config(
                apps["service, batching on"], ServingConfig(), "127.0.0.1", 0, "warning"),
            "bare ASGI floor, HTTP bytes in and out": uvicorn.Config(
                asgi_floor.app, http="httptools", log_config=None, access_log=False)}

    async def hop() -> None:
        await asyncio.get_running_loop().run_in_executor(pool, int)

    async def ort() -> None:
        predictor.predict(matrix)

    async def connected() -> dict[str, Any]:  # the protocols need the running loop
        return {name: protocol_driver.Connection(config) for name, config in wire.items()}

    variants = {**{name: (lambda app=app: _call(app, path, body)) for name, app in apps.items()},
                "thread hand-off alone (run_in_executor)": hop,
                f"ONNX Runtime call alone ({len(rows)} rows)": ort}

    async def alternating() -> dict[str, float]:
        for name, connection in (await connected()).items():
            variants[name] = lambda c=connection: c.exchange(request)
        samples: dict[str, list[float]] = defaultdict(list)
        for work in variants.values():
            await _cpu_per_call(work, min(100, calls))  # warm-up
        for _ in range(rounds):
            for name, work in variants.items():
                samples[name].append(await _cpu_per_call(work, calls))
        return {name: statistics.median(values) for name, values in samples.items()}

    # On uvloop, as uvicorn runs both the service and the floors.
    result: dict[str, Any] = uvloop.run(alternating())
    result["profile"] = _profile(apps["service, batching off"], path, body, profile_calls)
    return result


def _profile(app: Any, path: str, body: bytes, calls: int) -> dict[str, float]:
    """Share of the event-loop thread's CPU time on the inference route, by package.

    Timed by thread CPU time, not wall time: waiting in epoll for the inference thread
    costs the loop nothing, and at concurrency 16 the loop's CPU is what runs out.
    """
    profiler = cProfile.Profile(time.thread_time)

    async def run() -> None:
        for _ in range(calls):
            await _call(app, path, body)

    profiler.enable()
    asyncio.run(run())
    profiler.disable()
    shares: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():
        shares[_package(filename)] += tottime
    total = sum(shares.values())
    return {name: share / total for name, share in sorted(shares.items(), key=lambda i: -i[1])}


def _package(filename: str) -> str:
    for name in ("fastapi", "starlette", "pydantic", "prometheus_client", "numpy",
                 "onnxruntime", "orjson", "logging", "asyncio", "concurrent", "mlops"):
        if f"/{name}/" in filename:
            return name
    if filename.startswith("~") or filename.startswith("<"):
        return "C built-ins (dict, isinstance, queue put, JSON, ...)"
    return "other"


def report(result: dict[str, Any]) -> None:
    profile = result["profile"]
    print("\n## Where the time goes (in-process, no HTTP; CPU us per request, median)\n")
    print("| variant | CPU us |\n|---|---:|")
    for name, value in result.items():
        if name != "profile":
            print(f"| {name} | {value:.0f} |")
    print("\nEvent-loop thread CPU on the inference route (batching off), by package:\n")
    print("| package | share |\n|---|---:|")
    for name, share in profile.items():
        if share >= 0.01:
            print(f"| {name} | {share:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-uri", default="models:/default.wage_panel@champion")
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args()
    manager = load(args.tracking_uri, args.model_uri)
    report(measure(manager, [[0.5] * len(manager.current.feature_names)] * args.rows))


if __name__ == "__main__":
    main()
