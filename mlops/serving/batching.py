"""Where ONNX Runtime calls run: on the event loop when short, else off it; one call per
request or micro-batched.

``MicroBatcher`` joins concurrent requests into one ONNX Runtime call. A batch closes at
the end of the event-loop iteration in which its requests were parsed, unless a request
that has already arrived at an inference route is still being read (then it waits for it,
at most ``window_ms``), or at once when it holds ``max_rows`` rows. So a lone request never
waits for others, requests that uvicorn starts together share a call, and a slow client
delays others by at most the window. A lone request whose call runs inline (below) does
not even wait for the end of the iteration: it runs at once, and only the requests that
follow it in the same iteration form a batch. Rows of different model versions never share a call,
which keeps a hot swap exact. ``DirectRunner`` is the same interface without batching.

Where a call runs (``InlineRule``): a call of a batch size that the predictor's warm-up
timed within ``inline_budget_s`` runs on the event loop itself, because handing it to a
thread and back costs several times a small model's call and the loop would only wait for
it; a longer one runs on an inference thread (the batcher's one, or the direct runner's
pool), so the loop keeps reading requests meanwhile. ``make bench-serving`` measures both.

Both bound the rows they hold (``RowLimit``): rows accepted and not yet answered, waiting
for a batch, queued for the inference thread or running. A request that would go over
the bound is refused at once (``Overloaded``, a 503 with Retry-After) instead of
queueing without limit, so under overload latency stays bounded and clients back off.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from mlops.serving.predictor import OnnxPredictor

ARRIVAL_KEY = "mlops.arrival"  # set in the ASGI scope while a request is on its way
# Told of each ONNX Runtime call: (predictor, rows, scores, seconds).
Observer = Callable[[OnnxPredictor, np.ndarray, np.ndarray, float], None]


class Overloaded(RuntimeError):
    """More rows waiting for inference than the service holds; try again later."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RowLimit:
    """Rows accepted for inference and not yet answered, at most ``max_rows`` (touched on
    the event loop only)."""

    def __init__(self, max_rows: int, retry_after_s: int = 1) -> None:
        self.max_rows, self.retry_after_s, self.rows = max_rows, retry_after_s, 0

    def take(self, rows: int) -> None:
        if self.rows + rows > self.max_rows:
            raise Overloaded(f"{self.rows} rows are waiting for inference; {rows} more would "
                             f"pass the limit of {self.max_rows}: retry later",
                             self.retry_after_s)
        self.rows += rows

    def give(self, rows: int) -> None:
        self.rows -= rows


class InferenceRunner(Protocol):
    observe: Observer

    def arrived(self, scope: MutableMapping[str, Any]) -> None: ...
    def left(self, scope: MutableMapping[str, Any]) -> None: ...
    async def predict(self, predictor: OnnxPredictor, matrix: np.ndarray,
                      scope: MutableMapping[str, Any] | None = None) -> np.ndarray: ...
    def close(self) -> None: ...


def timed(observe: Observer, predictor: OnnxPredictor, *matrices: np.ndarray) -> np.ndarray:
    """One ONNX Runtime call on the matrices stacked (in the worker thread: a failure,
    even of the stacking, reaches every waiting request as its error)."""
    start = time.perf_counter()
    matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
    scores = predictor.predict(matrix)
    observe(predictor, matrix, scores, time.perf_counter() - start)
    return scores


class InlineRule:
    """Which calls run on the event loop: those the predictor's warm-up timed within the
    budget (0: none). Remembered for the predictor serving now."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._predictor: OnnxPredictor | None = None
        self._rows = 0

    def rows(self, predictor: OnnxPredictor) -> int:
        if predictor is not self._predictor:
            self._predictor, self._rows = predictor, predictor.rows_within(self.budget_s)
        return self._rows


class DirectRunner:
    """One ONNX Runtime call per request: inline when short, else on a pool of
    ``threads`` threads."""

    def __init__(self, threads: int, observe: Observer, limit: RowLimit | None = None,
                 inline_budget_s: float = 0.0) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self.observe = observe
        self.limit = limit or RowLimit(1 << 62)
        self.inline = InlineRule(inline_budget_s)

    def arrived(self, scope: MutableMapping[str, Any]) -> None:
        pass

    def left(self, scope: MutableMapping[str, Any]) -> None:
        pass

    async def predict(self, predictor: OnnxPredictor, matrix: np.ndarray,
                      scope: MutableMapping[str, Any] | None = None) -> np.ndarray:
        self.limit.take(len(matrix))
        try:
            if len(matrix) <= self.inline.rows(predictor):
                return timed(self.observe, predictor, matrix)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, timed, self.observe, predictor,
                                              matrix)
        finally:
            self.limit.give(len(matrix))

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

    def __init__(self, window_ms: float, max_rows: int, observe: Observer,
                 limit: RowLimit | None = None, inline_budget_s: float = 0.0) -> None:
        if window_ms <= 0 or max_rows < 1:
            raise ValueError("a micro-batcher needs window_ms > 0 and max_rows >= 1")
        self.window_s, self.max_rows = window_ms / 1000.0, max_rows
        self.observe = observe
        self.limit = limit or RowLimit(1 << 62)
        self.inline = InlineRule(inline_budget_s)
        self._worker = _Worker("micro-batch")
        self._waiting: list[_Waiting] = []
        self._rows = 0
        self._incoming = 0  # requests that arrived and have neither joined nor left
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False  # a close is scheduled for the end of this loop iteration
        self._ran_alone = False  # a request ran at once in this loop iteration

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
        try:
            self.limit.take(len(matrix))
        except Overloaded:
            self._close_if_due()  # a batch may have been waiting for this request
            raise
        if self._alone(predictor, len(matrix)):
            try:
                return timed(self.observe, predictor, matrix)
            finally:
                self.limit.give(len(matrix))
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(predictor, matrix, future))
        self._rows += len(matrix)
        self._close_if_due()
        return await future

    def _alone(self, predictor: OnnxPredictor, rows: int) -> bool:
        """Whether this request runs at once, inline: nothing waits or is on its way, no
        other request ran so in this loop iteration (those that follow it in the same
        iteration batch together) and the call is short enough to run on the loop."""
        if self._ran_alone or self._waiting or self._incoming > 0 or (
                rows > self.inline.rows(predictor)):
            return False
        self._ran_alone = True
        asyncio.get_running_loop().call_soon(self._next_iteration)
        return True

    def _next_iteration(self) -> None:
        self._ran_alone = False

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
            call = partial(timed, self.observe, predictor, *[w.matrix for w in group])
            if sum(len(w.matrix) for w in group) <= self.inline.rows(predictor):
                _deliver(group, self.limit, *outcome(call))
            else:
                self._worker.submit(loop, call, partial(_deliver, group, self.limit))

    def close(self) -> None:
        self._worker.close()


class _Worker:
    """One thread running ONNX Runtime calls, each result handed back to the loop.

    Lighter than ``run_in_executor`` (no concurrent.futures Future, its locks and the
    chained asyncio future): one queue put there, one ``call_soon_threadsafe`` back.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, loop: asyncio.AbstractEventLoop, call: Callable[[], np.ndarray],
               done: Callable[[np.ndarray | None, BaseException | None], None]) -> None:
        self._jobs.put((loop, call, done))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, call, done = job
            try:
                loop.call_soon_threadsafe(done, *outcome(call))
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    def close(self) -> None:
        self._jobs.put(None)


class OffLoop:
    """Blocking calls awaited from the loop, run one at a time on a thread of their own
    (``_Worker``'s hand-off, a fraction of what anyio's thread pool costs per call, which
    FastAPI's ``run_in_threadpool`` uses). For calls that serialise anyway, such as a
    feature store read through one connection."""

    def __init__(self, name: str) -> None:
        self._worker = _Worker(name)

    async def __call__(self, call: Callable[..., Any], *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if future.done():  # cancelled: the client hung up
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._worker.submit(future.get_loop(), partial(call, *args), done)
        return await future

    def close(self) -> None:
        self._worker.close()


def outcome(call: Callable[[], np.ndarray]) -> tuple[np.ndarray | None, Exception | None]:
    """A call's result or its error, as the worker thread reports them."""
    try:
        return call(), None
    except Exception as exc:  # the batch's error goes to each of its requests
        return None, exc


def _deliver(group: list[_Waiting], limit: RowLimit, scores: np.ndarray | None,
             error: BaseException | None) -> None:
    """Each request's rows of the batch result, or the batch's error to each request; the
    rows leave the limit either way (a client that hung up included)."""
    limit.give(sum(len(waiting.matrix) for waiting in group))
    if error is not None:
        for waiting in group:
            if not waiting.future.done():
                waiting.future.set_exception(error)
        return
    start = 0
    for waiting in group:
        rows = len(waiting.matrix)
        if not waiting.future.done():  # a client that hung up has cancelled its future
            waiting.future.set_result(scores[start:start + rows])
        start += rows
