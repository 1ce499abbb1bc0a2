"""`make bench-platform`: how soon the platform starts a run and how many runs a pool completes,
on a real `prefect server start` (SQLite, a temporary PREFECT_HOME, a free port) and real
`prefect worker start --type process` workers, with a flow that does no work
(``benchmarks.platform_flows``) deployed from this checkout.

- start latency: ``--runs`` runs submitted one at a time (each after the last one ended, at
  a random phase of the worker's poll cycle) to an idle pool of concurrency 1; from just
  before ``POST /deployments/{id}/create_flow_run`` to the run's RUNNING state in the
  server's state history, split into the wait for the worker (to PENDING) and the flow-run
  process's start (PENDING to RUNNING); median and p95. Floor, measured beside each run: the
  same flow's body called by a fresh ``python -c`` (interpreter start and imports, no
  server, no worker). Bound: a poll gap is at most 1.3x the query interval.
- throughput: ``--runs-per-slot`` x N runs submitted at once to a pool of concurrency limit
  N (1, 2, 4; ``--quick``: 1, 2), one worker; runs completed per minute, from the first
  submission to the last run's end. Baseline, right after: as many direct starts, N at a
  time (the machine's own scaling of such starts, whatever else runs on it).

One worker runs at a time, on its own pool (``bench-c<N>``), with the polling settings in
``WORKER_SETTINGS``; the table prints them and why they were chosen. Targets, judged after
the table (exit status 1 when one is missed): start latency median <= the query interval +
2 direct starts (median) + 1 s, p95 <= the longest poll gap + 2 direct starts (p95) + 1 s
(see ``INTERPRETERS``); the throughput's gain from concurrency 1 to 4 >= 0.8x that of the
direct starts. The machine is shared: read each result against its baseline beside it.
``--quick``: tiny sizes, targets not checked.

``python -m benchmarks.bench_platform`` (`make bench-platform`).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks.gateway_triggers import background, p95
from benchmarks.servers import free_port
from benchmarks.targets import Target, conclude
from infra.worker_settings import WORKER_QUERY_S
from mlops.processes import start_background, stop_background, tail

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLOW = "bench-platform-noop"
ENTRYPOINT = "benchmarks/platform_flows.py:noop"
FLOOR = "from benchmarks.platform_flows import noop_body; noop_body()"
QUERY_S, PREFETCH_S, HEARTBEAT_S = WORKER_QUERY_S, 10.0, 30.0  # make up's query interval
# The worker's settings under test, with Prefect's default and why this value.
WORKER_SETTINGS = {
    # Bounds start latency (a run waits for the next poll) and each slot's refill. One poll
    # is one indexed query on the server: a few workers at 2 s cost it nothing, and the wait
    # (about half a gap on average) falls below the flow-run process's own start.
    "PREFECT_WORKER_QUERY_SECONDS": (QUERY_S, 10.0, "start waits <= 1.3x this for a poll"),
    # Immediate runs are due at once, so this only decides how early a scheduled run is
    # taken: it must exceed a poll gap plus a process start for cron runs to start on time,
    # and every prefetched run holds a pool slot (PENDING) until it starts.
    "PREFECT_WORKER_PREFETCH_SECONDS": (PREFETCH_S, 10.0,
                                        ">= 1.3x query + process start: on-time cron runs"),
    # How soon a new worker counts as online (pool READY); no bound on a run's start.
    "PREFECT_WORKER_HEARTBEAT_SECONDS": (HEARTBEAT_S, 30.0, "worker liveness only"),
}
JITTER = 0.3  # Prefect's poll loop draws each gap in [0.75, 1.3] x the query interval
# A process worker's run starts two interpreters that import Prefect as the floor does (a
# workspace supervisor that runs the pull steps, then the engine it execs into), and both
# talk to the API (read the run and deployment, propose RUNNING): at most two direct starts
# plus a second of requests.
INTERPRETERS, API_S = 2, 1.0
# The platform's gain from concurrency 1 to 4 over the direct starts' gain. A run's start
# is mostly imports on one core, so the cores free decide both; the platform's slot also
# idles for a poll between runs, which concurrency fills, so a worker and server that keep
# up scale at least as well as the direct starts (0.8: the noise of a shared machine).
MIN_SCALING = 0.8
QUICK_SIZES = {"runs": 3, "runs_per_slot": 1, "concurrency": [1, 2]}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Start(NamedTuple):
    """One run's start: seconds from submission to PENDING and to RUNNING."""

    pending_s: float
    running_s: float


class Measured(NamedTuple):
    starts: list[Start]  # one run at a time on an idle pool of concurrency 1
    floor_s: list[float]  # a direct `python -c` start of the flow's body each
    # concurrency -> (runs, seconds to the last run's end, seconds for as many direct starts)
    throughput: dict[int, tuple[int, float, float]]


class Api:
    """The server's REST API, retrying while it answers 503 (SQLite busy), as Prefect's
    own client does."""

    def __init__(self, url: str) -> None:
        self._client = httpx.Client(base_url=url, timeout=30.0)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(10):
            response = self._client.request(method, path, json=body)
            if response.status_code != 503:
                break
            time.sleep(min(0.2 * 2 ** attempt, 3.0))
        if response.is_error:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def close(self) -> None:
        self._client.close()


def environment(folder: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of the server and workers: their own PREFECT_HOME, nothing of the
    caller's Prefect profile or credentials, the worker settings under test."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING", "DO_NOT_TRACK": "true"}
    env |= {name: f"{value:g}" for name, (value, _, _) in WORKER_SETTINGS.items()}
    return env | ({"PREFECT_API_URL": api_url} if api_url else {})


@contextmanager
def server(folder: Path) -> Iterator[str]:
    """A Prefect server on a free port until the block ends; yields its API URL."""
    port = free_port()
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
               str(port)]
    url = f"http://127.0.0.1:{port}"
    with background("prefect-server", command, f"{url}/api/health", environment(folder),
                    folder):
        yield f"{url}/api"


def deploy(api: Api, concurrency: int) -> str:
    """Pool ``bench-c<N>`` of concurrency limit N and a deployment of the no-op flow on it,
    run from this checkout; returns the deployment's id."""
    pool = f"bench-c{concurrency}"
    api.call("POST", "/work_pools/", {"name": pool, "type": "process",
                                      "concurrency_limit": concurrency})
    flow_id = api.call("POST", "/flows/", {"name": FLOW})["id"]
    return api.call("POST", "/deployments/", {
        "name": f"c{concurrency}", "flow_id": flow_id, "work_pool_name": pool,
        "work_queue_name": "default", "entrypoint": ENTRYPOINT, "parameters": {},
        "pull_steps": [{"prefect.deployments.steps.set_working_directory":
                        {"directory": str(REPO)}}]})["id"]


@contextmanager
def worker(api: Api, api_url: str, folder: Path, concurrency: int) -> Iterator[None]:
    """A process worker on pool ``bench-c<N>`` until the block ends, once the pool is READY
    (the worker's first heartbeat)."""
    pool = f"bench-c{concurrency}"
    log, pid = folder / f"worker-{pool}.log", folder / f"worker-{pool}.pid"
    process = start_background([str(BIN / "prefect"), "worker", "start", "--pool", pool,
                                "--type", "process", "--name", f"bench-{pool}"], log, pid,
                               environment(folder, api_url))
    try:
        deadline = time.monotonic() + 120
        while api.call("GET", f"/work_pools/{pool}")["status"] != "READY":
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker on {pool} not ready:\n{tail(log)}")
            time.sleep(0.2)
        yield
    finally:
        stop_background(pid)


def submit(api: Api, deployment: str) -> tuple[str, datetime]:
    """A run of the deployment, due now; its id and the time just before the request."""
    submitted = datetime.now(UTC)
    return api.call("POST", f"/deployments/{deployment}/create_flow_run", {})["id"], submitted


def wait_final(api: Api, ids: list[str], timeout_s: float = 600.0) -> list[dict]:
    """The runs once all ended; SystemExit when one did not complete or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = api.call("POST", "/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}},
                                                     "limit": len(ids)})
        if len(runs) == len(ids) and all(run["state_type"] in FINAL for run in runs):
            failed = [run["id"] for run in runs if run["state_type"] != "COMPLETED"]
            if failed:
                raise SystemExit(f"runs did not complete: {failed}")
            return runs
        time.sleep(0.25)
    raise SystemExit(f"runs not finished after {timeout_s:.0f} s")


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def start_of(api: Api, run_id: str, submitted: datetime) -> Start:
    """When the run became PENDING (a worker took it) and RUNNING (its process started),
    from the server's state history, in seconds after ``submitted``."""
    states = api.call("GET", f"/flow_run_states/?flow_run_id={run_id}")
    first = {}
    for state in sorted(states, key=lambda s: s["timestamp"]):
        first.setdefault(state["type"], at(state["timestamp"]))
    return Start(*((first[kind] - submitted).total_seconds() for kind in ("PENDING", "RUNNING")))


def time_floor(folder: Path) -> float:
    """Seconds for a fresh interpreter to import the flow's module and call its body."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR], cwd=REPO, check=True, timeout=120,
                   env=environment(folder))
    return time.perf_counter() - began


def measure_latency(api: Api, deployment: str, runs: int,
                    folder: Path) -> tuple[list[Start], list[float]]:
    """Runs one at a time on the idle pool, each after a direct start (the floor) and a
    random pause, so submissions fall at random phases of the poll cycle."""
    starts, floors = [], []  # the worker's start already brought Prefect into the page cache
    for _ in range(runs):
        floors.append(time_floor(folder))
        time.sleep(random.uniform(0, QUERY_S))
        run_id, submitted = submit(api, deployment)
        wait_final(api, [run_id])
        starts.append(start_of(api, run_id, submitted))
    return starts, floors


def direct_starts(folder: Path, concurrency: int, runs: int) -> float:
    """Seconds for ``runs`` direct starts, ``concurrency`` at a time."""
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: time_floor(folder), range(runs)))
    return time.perf_counter() - began


def measure_throughput(api: Api, deployment: str, runs: int) -> float:
    """Submits ``runs`` at once; seconds from the first submission to the last run's end."""
    submitted = [submit(api, deployment) for _ in range(runs)]
    ended = wait_final(api, [run_id for run_id, _ in submitted])
    return (max(at(run["end_time"]) for run in ended) - submitted[0][1]).total_seconds()


def measure(args: argparse.Namespace) -> Measured:
    """The whole benchmark on one server: for each concurrency, its own pool and worker."""
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp, \
            server(Path(tmp)) as api_url, closing(Api(api_url)) as api:
        deployments = {n: deploy(api, n) for n in args.concurrency}
        starts: list[Start] = []
        floors: list[float] = []
        throughput = {}
        for n in args.concurrency:
            with worker(api, api_url, Path(tmp), n):
                if n == 1:
                    starts, floors = measure_latency(api, deployments[n], args.runs, Path(tmp))
                runs = args.runs_per_slot * n
                seconds = measure_throughput(api, deployments[n], runs)
            throughput[n] = (runs, seconds, direct_starts(Path(tmp), n, runs))
    return Measured(starts, floors, throughput)


def per_minute(runs: int, seconds: float) -> float:
    return runs * 60 / seconds


def scaling(measured: Measured) -> tuple[float, float] | None:
    """Runs per minute at concurrency 4 over concurrency 1: the platform's, the direct
    starts'; None when either was not measured."""
    one, four = measured.throughput.get(1), measured.throughput.get(4)
    if not (one and four):
        return None
    return (per_minute(four[0], four[1]) / per_minute(one[0], one[1]),
            per_minute(four[0], four[2]) / per_minute(one[0], one[2]))


def latency_bounds(floor_s: list[float]) -> dict[str, float]:
    """Targets of the start latency: the poll wait (a mean gap for the median, the longest
    gap for p95) plus ``INTERPRETERS`` direct starts (the same statistic) and ``API_S``."""
    return {"median": QUERY_S + INTERPRETERS * statistics.median(floor_s) + API_S,
            "p95": QUERY_S * (1 + JITTER) + INTERPRETERS * p95(floor_s) + API_S}


def latency_stats(measured: Measured) -> dict[str, tuple[float, float, float]]:
    """Median and p95, each of its own column: seconds to RUNNING, to PENDING (the worker
    took the run) and from PENDING to RUNNING (the flow-run process started)."""
    running = [start.running_s for start in measured.starts]
    pending = [start.pending_s for start in measured.starts]
    process = [start.running_s - start.pending_s for start in measured.starts]
    return {name: (stat(running), stat(pending), stat(process))
            for name, stat in (("median", statistics.median), ("p95", p95))}


def table_rows(measured: Measured) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    if measured.starts:
        bounds = latency_bounds(measured.floor_s)
        floors = {"median": statistics.median(measured.floor_s), "p95": p95(measured.floor_s)}
        for name, (total, pending, process) in latency_stats(measured).items():
            rows.append((f"start latency, {name}", "1", f"{len(measured.starts)}, one at a time",
                         f"direct start {floors[name]:.2f} s; poll gap <= "
                         f"{QUERY_S * (1 + JITTER):.1f} s",
                         f"{total:.2f} s (worker pickup {pending:.2f} s, process start "
                         f"{process:.2f} s)",
                         f"<= {bounds[name]:.2f} s"))
    gains = scaling(measured)
    for n, (runs, seconds, direct) in measured.throughput.items():
        target = "-"
        if n == 4:
            target = f"gain from 1 >= {MIN_SCALING}x the direct starts' gain"
        if n == 4 and gains:
            target += f" ({gains[0]:.2f}x vs {gains[1]:.2f}x)"
        rows.append(("throughput", str(n), f"{runs} at once",
                     f"direct starts, {n} at a time: {per_minute(runs, direct):.1f}/min",
                     f"{per_minute(runs, seconds):.1f} runs/min", target))
    return rows


def check_targets(measured: Measured) -> list[Target]:
    targets = []
    if measured.starts:
        bounds = latency_bounds(measured.floor_s)
        for name, (total, _, _) in latency_stats(measured).items():
            targets.append(Target(f"start latency {name} <= {bounds[name]:.2f} s (poll gap + "
                                  f"{INTERPRETERS} direct starts + {API_S:g} s)",
                                  total <= bounds[name], f"{total:.2f} s"))
    gains = scaling(measured)
    targets.append(Target(
        f"throughput gain from concurrency 1 to 4 >= {MIN_SCALING}x the direct starts' gain",
        None if gains is None else gains[0] >= MIN_SCALING * gains[1],
        "not measured" if gains is None else
        f"{gains[0]:.2f}x vs {gains[1]:.2f}x ({gains[0] / gains[1]:.2f})"))
    return targets


def report(measured: Measured) -> None:
    print("| measure | pool concurrency | runs | baseline (same run) | result | target |")
    print("|---|---:|---|---|---|---|")
    for row in table_rows(measured):
        print("| " + " | ".join(row) + " |")
    print("\n| worker setting | value | Prefect default | why |")
    print("|---|---:|---:|---|")
    for name, (value, default, why) in WORKER_SETTINGS.items():
        print(f"| {name} | {value:g} | {default:g} | {why} |")
    print(f"| poll gap jitter (fixed in Prefect) | {JITTER} | {JITTER} | each gap in "
          f"[0.75, {1 + JITTER}] x query |")
    print("| pool concurrency_limit | N | none | counts PENDING + RUNNING runs |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="start-latency runs")
    parser.add_argument("--runs-per-slot", type=int, default=6,
                        help="throughput runs per unit of pool concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes ({QUICK_SIZES}); targets not checked")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK_SIZES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")
    measured = measure(args)
    report(measured)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return conclude(check_targets(measured), args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
