"""The challenger in shadow: scored beside the champion on a share of its calls, off the
request path, so that the team sees how the two agree and how fast the challenger is
before it answers anyone.

After each ONNX Runtime call of the champion, ``Shadow.offer`` keeps the call's rows and
scores with probability ``rate`` (one random draw; nothing else on the request path).
One thread, waking every ``POLL_S``, scores what was kept with the challenger, the calls
joined into one ONNX Runtime call, and counts rows that agree (the same label; for
regression, within ``REGRESSION_TOLERANCE`` of the champion's value, relatively) and the
challenger's call time. The queue is bounded: when the challenger falls behind, calls are
dropped and counted, never waited for. The rate changes at any time (``POST /admin/shadow``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from mlops.serving.metrics import LATENCY_BUCKETS, Histogram
from mlops.serving.model_manager import ModelManager
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.v1_payloads import label_array

log = logging.getLogger(__name__)
REGRESSION_TOLERANCE = 0.05  # relative difference under which two regressions agree
MAX_JOINED_ROWS = 4096  # rows per challenger call, however far behind it is
POLL_S = 0.005  # how often the shadow thread looks for calls to score
IDLE_S = 0.5  # how often it looks while the shadow is off


class Shadow:
    """Scores a share of the champion's calls with the challenger, in a thread of its own."""

    def __init__(self, challenger: ModelManager, rate: float = 0.0, max_queued: int = 256,
                 seed: int | None = None) -> None:
        self.challenger, self.rate, self.max_queued = challenger, rate, max_queued
        self.calls: dict[str, int] = defaultdict(int)  # scored, dropped, failed
        self.rows: dict[tuple[str, str], int] = defaultdict(int)  # (challenger, agree|...)
        self.latency = Histogram(LATENCY_BUCKETS)
        # A deque, not a queue.Queue: appending is one atomic step, no lock or wake-up on
        # the request path; the thread polls it.
        self._pending: deque = deque()
        self._busy = False
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def offer(self, predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Called after every champion call; keeps it with probability ``rate``."""
        if self.rate <= 0 or (self.rate < 1 and self._rng.random() >= self.rate):
            return
        challenger = self.challenger.current
        if challenger is None or challenger is predictor:  # a canary's own answer
            return
        if len(self._pending) >= self.max_queued:
            self.calls["dropped"] += 1
            return
        self._pending.append((challenger, predictor, matrix, scores))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every call kept so far was scored (for tests and a clean stop)."""
        deadline = time.monotonic() + timeout_s
        while (self._pending or self._busy) and time.monotonic() < deadline:
            time.sleep(0.005)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S if self.rate > 0 else IDLE_S):
            while self._pending:
                self._score_pending()

    def _score_pending(self) -> None:
        """What waits, up to ``MAX_JOINED_ROWS`` rows, in one call per challenger."""
        self._busy = True
        items, rows = [], 0
        while self._pending and rows < MAX_JOINED_ROWS:
            items.append(self._pending.popleft())
            rows += len(items[-1][2])
        try:
            self._score(items)
        except Exception:  # a broken challenger must not stop the shadow thread
            log.exception("shadow scoring failed")
            self.calls["failed"] += len(items)
        finally:
            self._busy = False

    def _score(self, items: list) -> None:
        for challenger in {id(i[0]): i[0] for i in items}.values():  # a swap mid-queue
            same = [i for i in items if i[0] is challenger]
            matrix = np.concatenate([i[2] for i in same])
            start = time.perf_counter()
            scores = challenger.predict(matrix)
            self.latency.observe(time.perf_counter() - start)
            champion_scores = np.concatenate([i[3] for i in same])
            agree = int(np.count_nonzero(agreement(same[0][1], champion_scores, scores)))
            self.rows[(challenger.version, "agree")] += agree
            self.rows[(challenger.version, "disagree")] += len(matrix) - agree
            self.calls["scored"] += len(same)

    def collect(self) -> Iterator:
        calls = CounterMetricFamily("mlops_shadow_calls", "Champion calls offered to the "
                                    "challenger in shadow, by outcome", labels=["outcome"])
        for outcome in ("scored", "dropped", "failed"):
            calls.add_metric([outcome], self.calls[outcome])
        rows = CounterMetricFamily("mlops_shadow_rows", "Rows scored in shadow, by challenger "
                                   "version and whether it agreed with the champion",
                                   labels=["challenger", "outcome"])
        for labels, count in list(self.rows.items()):
            rows.add_metric(list(labels), count)
        latency = HistogramMetricFamily("mlops_shadow_inference_duration_seconds",
                                        "Seconds per ONNX Runtime call of the challenger")
        latency.add_metric([], self.latency.buckets(), self.latency.sum)
        rate = GaugeMetricFamily("mlops_shadow_rate", "Share of champion calls scored in "
                                 "shadow", labels=["challenger"])
        current = self.challenger.current
        rate.add_metric([current.version if current else ""], self.rate)
        yield from (calls, rows, latency, rate)


def load_challenger(challenger: ModelManager, champion: OnnxPredictor | None) -> str | None:
    """Load the version the challenger's source names now; why it cannot stand in for
    ``champion`` (None when it can: the same features, raw or plain alike)."""
    try:
        result = challenger.refresh()
        why = result.detail or result.status
    except Exception as exc:  # the registry's errors: no such alias, unreachable
        why = str(exc)
    current = challenger.current
    if current is None:
        return f"no challenger from {challenger.source.uri}: {why}"
    if champion is not None and (current.feature_names != champion.feature_names
                                 or (current.encoding is None) != (champion.encoding is None)):
        return (f"challenger v{current.version} takes features {current.feature_names}, the "
                f"champion {champion.feature_names}: it cannot score the same rows")
    return None


def agreement(predictor: OnnxPredictor, champion: np.ndarray,
              challenger: np.ndarray) -> np.ndarray:
    """Per row, whether the two models agree: the same label (class) for classification,
    values within ``REGRESSION_TOLERANCE`` of each other for regression."""
    if challenger.shape != champion.shape:
        return np.zeros(len(champion), dtype=bool)
    if predictor.task == "regression":
        scale = np.maximum(np.abs(champion), 1e-6)
        return np.abs(challenger - champion) <= REGRESSION_TOLERANCE * scale
    if predictor.classes is not None:
        return np.argmax(champion, axis=1) == np.argmax(challenger, axis=1)
    return label_array(champion, predictor.task) == label_array(challenger, predictor.task)
