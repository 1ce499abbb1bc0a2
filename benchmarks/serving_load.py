"""Alternating rounds of load over servers that are all up at once, and their medians.

A cell is one server, one request kind, one concurrency. Each is checked once (one
request, one prediction per row) before any load. A round runs every cell once, grouped
by kind and concurrency, so the servers compared on a kind run next to each other in time;
the servers' order inside a group rotates each round. On a shared machine one run can be
20% off; a ratio of medians of alternating runs is what the targets judge.

c1 is wrk -t1 -c1 (h2load -t1 -c1), c16 is -t2 -c16; one stream per gRPC connection.
"""

from __future__ import annotations

import ssl
import statistics
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import h2load, wrk
from benchmarks.servers import Running
from benchmarks.serving_requests import Request, call_grpc, check_grpc, check_rest
from benchmarks.wrk import LoadResult
from mlops.processes import tail

THREADS_BY_CONNECTIONS = {1: 1, 16: 2}


@dataclass(frozen=True)
class Cell:
    """One server loaded with one request kind at one concurrency; ``load_file`` is wrk's
    script or h2load's body, ``reply_bytes`` what every gRPC call must bring back."""

    running: Running
    request: Request
    connections: int
    load_file: Path
    reply_bytes: int = 0

    @property
    def group(self) -> tuple[str, int]:
        return self.request.kind, self.connections

    def run(self, seconds: float, logs: Path) -> LoadResult:
        """One load run; stops the bench, with the server's log, when its server died."""
        try:
            return self._run(seconds, logs)
        except RuntimeError:
            process, server = self.running.process, self.running.server
            if process is None or process.poll() is None:
                raise
            raise SystemExit(f"{server.name} exited ({process.returncode}) during the load:\n"
                             f"{tail(logs / f'{server.key}.log')}") from None

    def _run(self, seconds: float, logs: Path) -> LoadResult:
        threads = THREADS_BY_CONNECTIONS[self.connections]
        if self.request.grpc:
            return h2load.run(f"http://{self.running.grpc_address}", self.load_file,
                              self.connections, threads, seconds, self.reply_bytes,
                              logs / f"h2load-{self.running.server.key}.log")
        return wrk.run(self.running.url + self.request.path, self.load_file, self.connections,
                       threads, seconds)


def prepare(running: Running, requests: list[Request], logs: Path, model: str,
            verify: ssl.SSLContext | bool) -> list[Cell]:
    """Check each request once on the server, write its load file: one cell per
    concurrency."""
    cells = []
    server = running.server
    for request in requests:
        name = f"{server.key}-{request.kind.replace(' ', '-')}"
        if request.grpc:
            reply = check_grpc(running.grpc_address or "", request, model)
            load_file = h2load.write_body(logs / f"{name}.grpc", request.body)
        else:
            check_rest(running.url, request, server.constant, verify)
            reply, load_file = 0, wrk.write_script(logs / f"{name}.lua", request.body,
                                                   headers=request.headers)
        cells += [Cell(running, request, c, load_file, reply) for c in server.connections]
    return cells


def groups(cells: list[Cell], order: list[str]) -> list[list[Cell]]:
    """The cells by kind (in ``order``) and concurrency, servers in start order."""
    by_group: dict[tuple[str, int], list[Cell]] = defaultdict(list)
    for cell in cells:
        by_group[cell.group].append(cell)
    return [by_group[key] for key in sorted(by_group, key=lambda k: (order.index(k[0]), k[1]))]


def run_rounds(cells: list[Cell], order: list[str], rounds: int, seconds: float,
               warmup: float, logs: Path) -> dict[int, list[LoadResult]]:
    """Every cell ``rounds`` times, alternating; a warm-up run before each cell's first.
    Returns each cell's results by its index in ``cells``."""
    samples: dict[int, list[LoadResult]] = defaultdict(list)
    index = {id(cell): i for i, cell in enumerate(cells)}
    for number in range(rounds):
        for group in groups(cells, order):
            shift = number % len(group)
            for cell in group[shift:] + group[:shift]:
                if number == 0 and warmup:
                    cell.run(warmup, logs)
                samples[index[id(cell)]].append(cell.run(seconds, logs))
            kind, connections = group[0].group
            print(f"  round {number + 1}/{rounds} {kind} c{connections}: " + ", ".join(
                f"{cell.running.server.name} {samples[index[id(cell)]][-1].rps:.0f}"
                for cell in group) + " req/s", flush=True)
    return samples


def grpc_status_after(cells: list[Cell]) -> dict[int, str]:
    """One more call per gRPC cell after the load: its status from the trailers."""
    return {i: call_grpc(cell.running.grpc_address or "", cell.request.body)[1]
            for i, cell in enumerate(cells) if cell.request.grpc}


def summarise(cells: list[Cell], samples: dict[int, list[LoadResult]],
              statuses: dict[int, str]) -> list[dict[str, Any]]:
    """One row per cell: medians of req/s and latencies over its runs, errors summed (a
    gRPC call that failed after the load counts as one more)."""
    rows = []
    for i, cell in enumerate(cells):
        runs = samples[i]
        median = partial(_median, runs)
        rows.append({
            "server": cell.running.server.name, "key": cell.running.server.key,
            "kind": cell.request.kind, "connections": cell.connections, "runs": len(runs),
            "requests": sum(r.requests for r in runs), "seconds": sum(r.seconds for r in runs),
            "rps": median("rps"), "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms"),
            "mean_ms": median("mean_ms"), "max_ms": max(r.max_ms for r in runs),
            "errors": sum(r.errors for r in runs) + (statuses.get(i, "OK") != "OK")})
    return rows


def _median(runs: list[LoadResult], name: str) -> float:
    return statistics.median(getattr(run, name) for run in runs)
