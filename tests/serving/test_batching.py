"""Micro-batching rules, driven directly on an event loop with real ONNX Runtime sessions.

No test times the batcher: each uses a window far longer than the test's timeout where
the rule under test says the batch must close without waiting for it.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from onnx_models import ModelFactory, expected_scores

from mlops.serving.batching import DirectRunner, MicroBatcher, OffLoop
from mlops.serving.predictor import OnnxPredictor

NEVER_MS = 600_000.0  # a window no test may wait for
ROWS = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)


class Calls(list):
    """The rows of every ONNX Runtime call, as the metrics see them."""

    def __call__(self, predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray,
                 seconds: float) -> None:
        self.append(len(matrix))


def arrivals(batcher: MicroBatcher, count: int) -> list[dict]:
    """ASGI scopes of ``count`` requests that reached an inference route, not yet parsed."""
    scopes: list[dict] = [{} for _ in range(count)]
    for scope in scopes:
        batcher.arrived(scope)
    return scopes

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=20))


def test_a_lone_request_runs_at_once(predictor: OnnxPredictor) -> None:
    calls = Calls()
    batcher = MicroBatcher(NEVER_MS, 256, calls)

    async def lone() -> np.ndarray:
        scope: dict = {}
        batcher.arrived(scope)
        return await batcher.predict(predictor, ROWS[:1], scope)

    np.testing.assert_allclose(run(lone()), expected_scores(ROWS[:1]), rtol=1e-5)
    assert calls == [1]


def test_concurrent_requests_share_one_call_and_get_their_own_rows(
        predictor: OnnxPredictor) -> None:
    calls = Calls()
    batcher = MicroBatcher(NEVER_MS, 256, calls)

    async def sixteen() -> list[np.ndarray]:
        scopes = arrivals(batcher, 16)  # all arrived before any has parsed its body
        return await asyncio.gather(*[batcher.predict(predictor, ROWS[i:i + 1], scope)
                                      for i, scope in enumerate(scopes)])

    results = run(sixteen())
    assert calls == [16]
    for i, scores in enumerate(results):
        np.testing.assert_allclose(scores, expected_scores(ROWS[i:i + 1]), rtol=1e-5)


def test_a_request_that_leaves_without_joining_releases_the_batch(
        predictor: OnnxPredictor) -> None:
    calls = Calls()
    batcher = MicroBatcher(NEVER_MS, 256, calls)

    async def one_leaves() -> np.ndarray:
        stays, leaves = {}, {}
        batcher.arrived(stays)
        batcher.arrived(leaves)
        waiting = asyncio.ensure_future(batcher.predict(predictor, ROWS[:2], stays))
        await asyncio.sleep(0)
        assert not waiting.done()  # it waits for the other arrival ...
        batcher.left(leaves)  # ... which failed validation, say
        return await waiting

    assert run(one_leaves()).shape == (2,)
    assert calls == [2]


def test_the_window_bounds_the_wait_for_a_slow_arrival(predictor: OnnxPredictor) -> None:
    calls = Calls()
    batcher = MicroBatcher(5.0, 256, calls)

    async def slow_other() -> np.ndarray:
        batcher.arrived({})  # never joins and never leaves
        scope: dict = {}
        batcher.arrived(scope)
        return await batcher.predict(predictor, ROWS[:3], scope)

    assert run(slow_other()).shape == (3,)
    assert calls == [3]


def test_a_full_batch_closes_before_everyone_joined(predictor: OnnxPredictor) -> None:
    calls = Calls()
    batcher = MicroBatcher(NEVER_MS, 4, calls)

    async def full() -> list[np.ndarray]:
        scopes = arrivals(batcher, 3)
        first = [batcher.predict(predictor, ROWS[:2], scopes[i]) for i in range(2)]
        done = await asyncio.gather(*first)  # 4 rows: closed although one is still coming
        return [*done, await batcher.predict(predictor, ROWS[:1], scopes[2])]

    assert [len(scores) for scores in run(full())] == [2, 2, 1]
    assert calls == [4, 1]


def test_versions_never_share_a_call(tmp_path: Path, model_factory: ModelFactory,
                                     predictor: OnnxPredictor) -> None:
    path, sha = model_factory(tmp_path / "v4.onnx", bias=3.0)
    newer = OnnxPredictor.load(str(path), sha, "synthetic", "4")
    calls = Calls()
    batcher = MicroBatcher(NEVER_MS, 256, calls)

    async def mixed() -> list[np.ndarray]:
        scopes = arrivals(batcher, 5)
        models = [predictor, newer, predictor, newer, predictor]
        return await asyncio.gather(*[batcher.predict(m, ROWS[i:i + 1], s)
                                      for i, (m, s) in enumerate(zip(models, scopes, strict=True))])

    results = run(mixed())
    assert sorted(calls) == [2, 3]
    np.testing.assert_allclose(results[0], expected_scores(ROWS[:1]), rtol=1e-5)
    assert not np.allclose(results[1], expected_scores(ROWS[1:2]))  # v4's bias, not v3's


def test_a_failed_call_fails_each_request_of_the_batch(predictor: OnnxPredictor) -> None:
    batcher = MicroBatcher(NEVER_MS, 256, Calls())

    async def bad() -> list:
        scopes = arrivals(batcher, 2)
        return await asyncio.gather(batcher.predict(predictor, ROWS[:1], scopes[0]),
                                    batcher.predict(predictor, ROWS[:1, :3], scopes[1]),
                                    return_exceptions=True)

    results = run(bad())
    assert all(isinstance(r, ValueError) for r in results), results


def test_direct_runner_runs_each_request_alone(predictor: OnnxPredictor) -> None:
    calls = Calls()
    runner = DirectRunner(2, calls)

    async def four() -> list[np.ndarray]:
        return await asyncio.gather(*[runner.predict(predictor, ROWS[:i + 1]) for i in range(4)])

    assert [len(r) for r in run(four())] == [1, 2, 3, 4]
    assert sorted(calls) == [1, 2, 3, 4]
    runner.close()


class Threads(list):
    """The thread of every ONNX Runtime call."""

    def __call__(self, predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray,
                 seconds: float) -> None:
        self.append(threading.current_thread())


@pytest.mark.parametrize("runner", ["micro-batching", "direct"])
def test_calls_timed_within_the_budget_at_warm_up_run_on_the_loop(
        predictor: OnnxPredictor, runner: str) -> None:
    """A tiny model's calls run on the event loop's thread with a budget, on an inference
    thread without one (budget 0), with the same results."""
    for budget_s, on_loop in ((1.0, True), (0.0, False)):
        threads = Threads()
        made = (MicroBatcher(NEVER_MS, 256, threads, inline_budget_s=budget_s)
                if runner == "micro-batching" else DirectRunner(1, threads,
                                                                inline_budget_s=budget_s))

        async def one(made: MicroBatcher | DirectRunner) -> np.ndarray:
            scope: dict = {}
            made.arrived(scope)
            return await made.predict(predictor, ROWS[:3], scope)

        np.testing.assert_allclose(run(one(made)), expected_scores(ROWS[:3]), rtol=1e-5)
        assert (threads == [threading.main_thread()]) is on_loop, threads
        made.close()


def test_rows_within_a_budget_come_from_the_warm_up_timings(predictor: OnnxPredictor) -> None:
    assert set(predictor.warm_seconds) == {1, 8, 64, 256}
    assert all(seconds > 0 for seconds in predictor.warm_seconds.values())
    timed = copy.copy(predictor)
    timed.warm_seconds = {1: 1e-5, 8: 2e-5, 64: 1e-3, 256: 5e-3}
    assert timed.rows_within(250e-6) == 8
    assert timed.rows_within(1e-2) == 256
    assert timed.rows_within(0.0) == 0


def test_batcher_refuses_a_zero_window() -> None:
    with pytest.raises(ValueError, match="window_ms > 0"):
        MicroBatcher(0, 256, Calls())


def test_off_loop_calls_run_on_their_thread_and_return_or_raise_there() -> None:
    lookups = OffLoop("test-lookups")

    def thread_name(suffix: str) -> str:
        return threading.current_thread().name + suffix

    def fails() -> None:
        raise LookupError("no such entity")

    async def main() -> tuple[list[str], str]:
        names = await asyncio.gather(*(lookups(thread_name, f"-{i}") for i in range(3)))
        with pytest.raises(LookupError, match="no such entity"):
            await lookups(fails)
        return names, threading.current_thread().name

    try:
        names, loop_thread = asyncio.run(main())
    finally:
        lookups.close()
    assert names == ["test-lookups-0", "test-lookups-1", "test-lookups-2"]
    assert loop_thread != "test-lookups"
