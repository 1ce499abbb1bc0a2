"""What being watched costs the inference service: throughput at concurrency 16 while a real
Prometheus scrapes its /metrics every second, against the same service not scraped.

One service (batching on, the champion bench-serving trains or reuses) and one Prometheus
(Debian's) run for the whole measurement; between runs Prometheus is switched between a
configuration that scrapes the service every second and one that scrapes nothing, through
its reload endpoint, so the rounds alternate A B A B on the same processes and the ratio of
medians holds on a shared machine. Each scraped run is checked to have been scraped (the
service answered Prometheus' GET /metrics about once a second), so a silent Prometheus
cannot pass.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import bench_serving, serving_load, wrk
from benchmarks.servers import Running, Server, free_port, serving
from benchmarks.serving_requests import build
from infra.prometheus_config import binary
from mlops.config import DEFAULT_SPEC, load_spec
from mlops.processes import start_background, stop_background

CONNECTIONS = 16
TARGET_RATIO = 0.97


@dataclass(frozen=True)
class ScrapeCost:
    unscraped_rps: list[float]
    scraped_rps: list[float]
    scrapes: int  # scrapes the service answered during the scraped runs

    @property
    def ratio(self) -> float:
        return statistics.median(self.scraped_rps) / statistics.median(self.unscraped_rps)


class WatchingPrometheus:
    """A Prometheus whose one job, the service, is switched on and off by reloading."""

    def __init__(self, folder: Path, service: str) -> None:
        self.folder, self.service = folder, service.removeprefix("http://")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = folder / "prometheus.yml"

    def start(self) -> None:
        self.write(scraping=False)
        start_background([binary("prometheus"), f"--config.file={self.config}",
                          f"--storage.tsdb.path={self.folder / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}",
                          "--web.enable-lifecycle"], self.folder / "prometheus.log",
                         self.folder / "prometheus.pid")
        deadline = time.monotonic() + 60
        while not self._answers("/-/ready"):
            if time.monotonic() > deadline:
                raise SystemExit(f"Prometheus not ready: {self.folder / 'prometheus.log'}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_background(self.folder / "prometheus.pid")

    def write(self, scraping: bool) -> None:
        jobs = [{"job_name": "serving", "scrape_interval": "1s", "scrape_timeout": "1s",
                 "static_configs": [{"targets": [self.service]}]}] if scraping else []
        self.config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"},
                                               "scrape_configs": jobs}))

    def switch(self, scraping: bool) -> None:
        self.write(scraping)
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def measure(bench_dir: Path, rounds: int, seconds: float, quick: bool) -> ScrapeCost:
    """Alternating rounds of wrk runs, not scraped then scraped, on one service."""
    args = argparse.Namespace(bench_dir=bench_dir, quick=quick, fresh=False)
    _, fill, _ = bench_serving.setup(args)
    logs = bench_dir / "scrape-logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = Server("scraped", "service, batching on", bench_serving.SERVICE, ("1-row",),
                    connections=(CONNECTIONS,))
    payloads = bench_serving.request_payloads(load_spec(DEFAULT_SPEC))
    with serving([server], fill, logs) as (running,):
        (cell,) = serving_load.prepare(running, [build("1-row", "v2", bench_serving.MODEL,
                                                       payloads)], logs,
                                       bench_serving.MODEL, True)
        prometheus = WatchingPrometheus(logs / "prometheus", running.url)
        prometheus.folder.mkdir(exist_ok=True)
        prometheus.start()
        try:
            cost = _rounds(cell, running, prometheus, rounds, seconds, logs)
        finally:
            prometheus.stop()
    # Over all the scraped runs, most seconds must have had a scrape (a quick run's single
    # second may fall between two).
    if not quick and cost.scrapes < rounds * seconds / 2:
        raise SystemExit(f"Prometheus scraped the service {cost.scrapes} times in {rounds} "
                         f"runs of {seconds:g} s: not every second")
    return cost


def _rounds(cell: serving_load.Cell, running: Running, prometheus: WatchingPrometheus,
            rounds: int, seconds: float, logs: Path) -> ScrapeCost:
    wrk.run(running.url + cell.request.path, cell.load_file, CONNECTIONS, 2, 1)  # warm-up
    unscraped, scraped, scrapes = [], [], 0
    for _ in range(rounds):
        for scraping in (False, True):
            prometheus.switch(scraping)
            time.sleep(1.5)  # the reload applied: the first scrape (or none) is under way
            before = served_scrapes(running.url)
            result = cell.run(seconds, logs)
            (scraped if scraping else unscraped).append(result.rps)
            if scraping:
                scrapes += served_scrapes(running.url) - before - 1  # less our own read
    return ScrapeCost(unscraped, scraped, scrapes)


def served_scrapes(url: str) -> int:
    """GET /metrics answered by the service so far, by its own request counter (a read
    here counts once it is answered, so the next read sees it)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "mlops_requests":
            return int(sum(s.value for s in family.samples if s.name == "mlops_requests_total"
                           and s.labels["route"] == "/metrics"))
    return 0


def rows(cost: ScrapeCost) -> list[dict[str, str]]:
    return [{"case": "not scraped (baseline)",
             "req/s (median)": f"{statistics.median(cost.unscraped_rps):,.0f}",
             "runs": str(len(cost.unscraped_rps)), "scrapes": "0"},
            {"case": "scraped every 1 s", "req/s (median)":
             f"{statistics.median(cost.scraped_rps):,.0f}",
             "runs": str(len(cost.scraped_rps)), "scrapes": str(cost.scrapes)}]
