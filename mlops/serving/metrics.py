"""The service's Prometheus metrics: plain in-memory series behind a custom collector.

Why not prometheus_client's Counter and Histogram: importing Feast sets
PROMETHEUS_MULTIPROC_DIR for the process and its children, which switches those classes
to multiprocess mode, where every metric of one name shares a single value per process
(two apps in one process would count together) and values live in a temporary
directory Feast deletes. Here each app owns its numbers; prometheus_client only renders
them (``generate_latest``), so the exposition format is the library's.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

LATENCY_BUCKETS = (.0005, .001, .0015, .002, .003, .005, .0075, .01, .025, .05, .1, .25, 1, 5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


class Histogram:
    """Counts per bucket (observations <= bound) and their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        cumulative, total = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            cumulative.append((bound, total))
        return cumulative


class ServiceMetrics:
    """Requests, latency, ONNX Runtime calls and the model served, in a registry of their own.

    HTTP requests are counted by route and status, gRPC calls (``mlops.serving.grpc``) by
    method and status code, in series of their own: a status label never mixes the two
    protocols' codes. Request series are updated on the event loop only; inference series
    from inference threads, under a lock.

    Requests in flight (what the autoscaler scales on, ``infra/k8s/serving/hpa.yaml``) are
    two plain ints, one per protocol: a request adds one when it starts and takes it back
    when it ends, on the loop that handles it. Each int has a single writer loop, so no
    lock is needed even when gRPC runs on a loop of its own; the scrape only reads them.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.by_version: dict[tuple[str, str], int] = defaultdict(int)
        self.version_latency: dict[str, Histogram] = {}
        self.grpc_calls: dict[tuple[str, str], int] = defaultdict(int)
        self.grpc_latency: dict[str, Histogram] = {}
        self.batch_rows, self.inference = Histogram(ROW_BUCKETS), Histogram(LATENCY_BUCKETS)
        self.models: dict[tuple[str, str, str], int] = {}
        self.changes: dict[str, int] = defaultdict(int)
        self.in_flight = 0  # HTTP requests being handled (app and fast lane)
        self.grpc_in_flight = 0  # gRPC calls being handled
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe_request(self, route: str, method: str, status: int, seconds: float,
                        version: str | None = None) -> None:
        """One HTTP request; with the model version that answered it, also per version
        (how a canary's challenger and the champion compare)."""
        self.requests[(route, method, str(status))] += 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)
        if version is not None:
            self.by_version[(version, "error" if status >= 500 else "ok")] += 1
            histogram = self.version_latency.get(version)
            if histogram is None:
                histogram = self.version_latency[version] = Histogram(LATENCY_BUCKETS)
            histogram.observe(seconds)

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        """One gRPC call: its method (``ModelInfer``) and status code name (``OK``)."""
        self.grpc_calls[(method, code)] += 1
        histogram = self.grpc_latency.get(method)
        if histogram is None:
            histogram = self.grpc_latency[method] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_inference(self, rows: int, seconds: float) -> None:
        with self._lock:
            self.batch_rows.observe(rows)
            self.inference.observe(seconds)

    def model_changed(self, status: str, current: Any) -> None:
        """Count the outcome; the served version reads 1, versions served before 0."""
        self.changes[status] += 1
        self.models = dict.fromkeys(self.models, 0)
        if current is not None:
            self.models[(current.name, current.version, current.sha256)] = 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("mlops_requests", "HTTP requests by route, method and "
                                       "status", labels=["route", "method", "status"])
        for labels, count in list(self.requests.items()):
            requests.add_metric(labels, count)
        latency = HistogramMetricFamily("mlops_request_duration_seconds", "HTTP request "
                                        "latency", labels=["route"])
        for route, histogram in list(self.latency.items()):
            latency.add_metric([route], histogram.buckets(), histogram.sum)
        versions = CounterMetricFamily("mlops_model_requests", "Inference requests by the "
                                       "model version that answered and outcome (error: "
                                       "5xx)", labels=["version", "outcome"])
        for labels, count in list(self.by_version.items()):
            versions.add_metric(labels, count)
        version_latency = HistogramMetricFamily("mlops_model_request_duration_seconds",
                                                "Request latency by the model version that "
                                                "answered", labels=["version"])
        for version, histogram in list(self.version_latency.items()):
            version_latency.add_metric([version], histogram.buckets(), histogram.sum)
        calls = CounterMetricFamily("mlops_grpc_requests", "gRPC calls by method and status "
                                    "code", labels=["method", "code"])
        for labels, count in list(self.grpc_calls.items()):
            calls.add_metric(labels, count)
        call_latency = HistogramMetricFamily("mlops_grpc_request_duration_seconds", "gRPC "
                                             "call latency", labels=["method"])
        for method, histogram in list(self.grpc_latency.items()):
            call_latency.add_metric([method], histogram.buckets(), histogram.sum)
        with self._lock:
            rows = HistogramMetricFamily("mlops_inference_batch_rows", "Rows per ONNX Runtime "
                                         "call (micro-batches included)")
            rows.add_metric([], self.batch_rows.buckets(), self.batch_rows.sum)
            seconds = HistogramMetricFamily("mlops_inference_duration_seconds",
                                            "Seconds per ONNX Runtime call")
            seconds.add_metric([], self.inference.buckets(), self.inference.sum)
        model = GaugeMetricFamily("mlops_model_info", "1 for the model version being served, "
                                  "0 for earlier ones", labels=["name", "version", "sha256"])
        for labels, value in self.models.items():
            model.add_metric(labels, value)
        changes = CounterMetricFamily("mlops_model_changes", "Model refreshes by outcome",
                                      labels=["status"])
        for status, count in list(self.changes.items()):
            changes.add_metric([status], count)
        in_flight = GaugeMetricFamily("mlops_requests_in_flight", "HTTP requests and gRPC "
                                      "calls being handled now (probes and scrapes excluded)",
                                      value=self.in_flight + self.grpc_in_flight)
        yield from (requests, latency, versions, version_latency, calls, call_latency, rows,
                    seconds, model, changes, in_flight)
