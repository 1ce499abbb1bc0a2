"""A bounded sample of what the service scored, for drift monitoring (``mlops.monitoring``).

Every ONNX Runtime call offers its rows and scores (``RequestSampler.offer``); a row is
kept with probability ``rate``. On the request path that is one random draw per row and
a reference kept in memory: the rows' conversion and the write happen on a background
thread, which every ``flush_s`` seconds writes what was kept as one parquet file under
``<root>/monitoring/<model>/requests/``, named by the UTC time it was written (readers
pick a window by name). The memory held is bounded (``max_rows``: beyond, new rows are
dropped and counted) and so is the disk (``keep_files`` per model: the oldest go).

A file holds the raw feature values as a client sent them (numbers, NaN for a null;
categories as text), ``prediction`` (the score, or the most probable class of a
multiclass model), ``model_version`` and ``scored_at``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mlops.data import storage
from mlops.data.encoding import category_texts
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.v1_payloads import label_array

log = logging.getLogger(__name__)

NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # sortable, so a window is a range of names
PREDICTION = "prediction"


def requests_folder(root: str, model: str) -> str:
    """Where a model's sampled requests are written (and read by the drift check)."""
    return storage.join(root, "monitoring", model, "requests")


def file_time(name: str) -> datetime | None:
    """When a sample file was written, from its name (None for another file)."""
    try:
        return datetime.strptime(name.split("-", 1)[0], NAME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


class RequestSampler:
    """Keeps a random share of scored rows and writes them out off the request path."""

    def __init__(self, root: str, rate: float = 0.1, max_rows: int = 50_000,
                 flush_s: float = 30.0, keep_files: int = 2_000, seed: int | None = None
                 ) -> None:
        self.root, self.rate, self.max_rows = root, rate, max_rows
        self.flush_s, self.keep_files = flush_s, keep_files
        self.kept = self.dropped = self.written = 0
        self._pending: deque[tuple[OnnxPredictor, np.ndarray, np.ndarray, float]] = deque()
        self._held = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._writer = f"{socket.gethostname()}-{os.getpid()}"  # replicas never clash
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def offer(self, predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Keep each row with probability ``rate`` (called after every ONNX Runtime call)."""
        rows = len(matrix)
        chosen = self._rng.random(rows) < self.rate if self.rate < 1 else slice(None)
        count = int(np.count_nonzero(chosen)) if self.rate < 1 else rows
        if count == 0:
            return
        with self._lock:
            if self._held + count > self.max_rows:
                self.dropped += count
                return
            self._held += count
            self.kept += count
            self._pending.append((predictor, matrix[chosen], scores[chosen], time.time()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="request-sampler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer and write what is still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_s + 30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # a full disk or an unreachable bucket must not stop serving
                log.exception("could not write the request sample")

    def flush(self) -> list[str]:
        """Write what was kept, one file per model version; the paths written."""
        with self._lock:
            taken, self._pending, self._held = self._pending, deque(), 0
        by_version: dict[tuple[str, str], list] = {}
        for item in taken:
            by_version.setdefault((item[0].name, item[0].version), []).append(item)
        paths = [self._write(items) for items in by_version.values()]
        for model in {name for name, _ in by_version}:
            self._prune(requests_folder(self.root, model))
        return paths

    def _write(self, items: list[tuple[OnnxPredictor, np.ndarray, np.ndarray, float]]) -> str:
        predictor = items[0][0]
        frame = pd.concat([_frame(*item) for item in items], ignore_index=True)
        stamp = datetime.now(UTC).strftime(NAME_FORMAT)
        path = storage.join(requests_folder(self.root, predictor.name),
                            f"{stamp}-{self._writer}.parquet")
        storage.write_parquet(path, frame)
        self.written += len(frame)
        return path

    def _prune(self, folder: str) -> None:
        names = [path for path in storage.list_files(folder)
                 if file_time(path.rsplit("/", 1)[-1])]
        for path in names[:max(0, len(names) - self.keep_files)]:
            storage.remove(path)


def _frame(predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray,
           at: float) -> pd.DataFrame:
    frame = recorded(predictor, matrix, scores)
    frame["model_version"] = predictor.version
    frame["scored_at"] = pd.Timestamp(at, unit="s", tz="UTC")
    return frame


def recorded(predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray
             ) -> pd.DataFrame:
    """Rows as a client sent them (categories as text, numbers as floats, NaN for a null)
    and their ``prediction``: the score, or a multiclass model's most probable class."""
    categorical = set(predictor.encoding.categorical) if predictor.encoding else set()
    columns = {}
    for index, name in enumerate(predictor.feature_names):
        values = matrix[:, index]
        columns[name] = (category_texts(values) if name in categorical
                         else pd.to_numeric(values, errors="coerce").astype("float64"))
    if predictor.classes is not None:
        columns[PREDICTION] = label_array(scores, predictor.task,
                                          classes=predictor.classes).astype(str)
    else:
        columns[PREDICTION] = np.asarray(scores, dtype="float64")
    return pd.DataFrame(columns)
