"""Where ONNX Runtime calls run: off the event loop, one call per request or micro-batched.

``MicroBatcher`` joins concurrent requests into one ONNX Runtime call on one inference
thread. A batch closes at the end of the event-loop iteration in which its requests were
parsed, unless a request that has already arrived at an inference route is still being
read (then it waits for it, at most ``window_ms``), or at once when it holds ``max_rows``
rows. So a lone request never waits (no added latency at concurrency 1), requests that
uvicorn starts together share a call, and a slow client delays others by at most the
window. Rows of different model versions never share a call, which keeps a hot swap
exact. A thread hand-off costs ~75-100 us of CPU on these VMs, ten times a small MLP's
ONNX Runtime call: sharing it is what raises throughput. ``DirectRunner`` is the same
interface without batching (a pool of threads, one call per request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlops.predictor import OnnxPredictor

ARRIVAL_KEY = "mlops.arrival"  # set in the ASGI scope while a request is on its way
Observer = Callable[[int, float], None]  # (rows, seconds) of each ONNX Runtime call


class InferenceRunner(Protocol):
    def arrived(self, scope: MutableMapping[str, Any]) -> None: ...
    def left(self, scope: MutableMapping[str, Any]) -> None: ...
    async def predict(self, predictor: OnnxPredictor, matrix: np.ndarray,
                      scope: MutableMapping[str, Any] | None = None) -> np.ndarray: ...
    def close(self) -> None: ...


def _timed(observe: Observer, predictor: OnnxPredictor, *matrices: np.ndarray) -> np.ndarray:
    """One ONNX Runtime call on the matrices stacked (in the worker thread: a failure,
    even of the stacking, reaches every waiting request as its error)."""
    start = time.perf_counter()
    matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
    scores = predictor.predict(matrix)
    observe(len(matrix), time.perf_counter() - start)
    return scores


class DirectRunner:
    """One ONNX Runtime call per request, on a pool of ``threads`` threads."""

    def __init__(self, threads: int, observe: Observer) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self._observe = observe

    def arrived(self, scope: MutableMapping[str, Any]) -> None:
        pass

    def left(self, scope: MutableMapping[str, Any]) -> None:
        pass

    async def predict(self, predictor: OnnxPredictor, matrix: np.ndarray,
                      scope: MutableMapping[str, Any] | None = None) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _timed, self._observe, predictor, matrix)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Waiting:
    predictor: OnnxPredictor
    matrix: np.ndarray
    future: asyncio.Future


class MicroBatcher:
    """Concurrent requests as one ONNX Runtime call, on one inference thread.

    All state is touched on the event loop only; the thread runs nothing but the call.
    """

    def __init__(self, window_ms: float, max_rows: int, observe: Observer) -> None:
        if window_ms <= 0 or max_rows < 1:
            raise ValueError("a micro-batcher needs window_ms > 0 and max_rows >= 1")
        self.window_s, self.max_rows = window_ms / 1000.0, max_rows
        self._observe = observe
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="micro-batch")
        self._waiting: list[_Waiting] = []
        self._rows = 0
        self._incoming = 0  # requests that arrived and have neither joined nor left
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False  # a close is scheduled for the end of this loop iteration

    def arrived(self, scope: MutableMapping[str, Any]) -> None:
        scope[ARRIVAL_KEY] = True
        self._incoming += 1

    def left(self, scope: MutableMapping[str, Any]) -> None:
        """A request that ended without joining (bad input, say) no longer holds a batch."""
        if scope.pop(ARRIVAL_KEY, False):
            self._incoming -= 1
            self._close_if_due()

    async def predict(self, predictor: OnnxPredictor, matrix: np.ndarray,
                      scope: MutableMapping[str, Any] | None = None) -> np.ndarray:
        if scope is not None and scope.pop(ARRIVAL_KEY, False):
            self._incoming -= 1
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(predictor, matrix, future))
        self._rows += len(matrix)
        self._close_if_due()
        return await future

    def _close_if_due(self) -> None:
        if not self._waiting or self._closing:
            return
        loop = asyncio.get_running_loop()
        if self._rows >= self.max_rows:
            self._close()
        elif self._incoming <= 0:
            # At the end of this loop iteration: requests whose tasks uvicorn started in
            # the same iteration join first (each runs to its submit without pausing).
            self._closing = True
            loop.call_soon(self._close)
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._close)

    def _close(self) -> None:
        self._closing = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting, self._rows = self._waiting, [], 0
        loop = asyncio.get_running_loop()
        for predictor in {id(w.predictor): w.predictor for w in batch}.values():
            group = [w for w in batch if w.predictor is predictor]
            done = loop.run_in_executor(self._pool, _timed, self._observe, predictor,
                                        *[w.matrix for w in group])
            done.add_done_callback(lambda result, group=group: _deliver(group, result))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _deliver(group: list[_Waiting], result: asyncio.Future) -> None:
    """Each request's rows of the batch result, or the batch's error to each request."""
    error = None if result.cancelled() else result.exception()
    if result.cancelled() or error is not None:
        for waiting in group:
            if not waiting.future.done():
                waiting.future.set_exception(error or asyncio.CancelledError())
        return
    scores, start = result.result(), 0
    for waiting in group:
        rows = len(waiting.matrix)
        if not waiting.future.done():  # a client that hung up has cancelled its future
            waiting.future.set_result(scores[start:start + rows])
        start += rows
