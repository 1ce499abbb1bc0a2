"""A labelled synthetic day of the platform's utilisation series, and the anomaly
detectors' (``mlops.monitoring.anomaly``) scores on it.

15 s samples of: the GPU pool's utilisation and queued runs (a daily load profile whose
morning ramp queues work while the pool is full, a night of idle GPUs with nothing queued,
runs finishing and replaced within a scrape or two); training runs starting and ending
through the day (samples/s with a slow sample after each epoch's checkpoint, memory and its
limit, and the time of the last finished epoch: an epoch ends when its amount of work, +-15%
around the run's nominal, is done); three serving instances' p99 latency with daily
seasonality, noise and one-sample blips. About 0.5% of all samples are missing (NaN).

Injected, seeded, at random times, with ground-truth intervals (kind, resource, start, end):
a stuck scheduler (slots free while runs stay queued), throughput collapses to 10-45%, memory
leaks that reach the limit within 8-25 minutes (the run is then killed), hung training loops
(every export of the run frozen, as a textfile no longer rewritten; killed or recovering)
and latency spikes of 2-6x. Stalls are labelled from the data, whatever their cause (a hang,
or a collapse long enough to delay an epoch): a run that still reports is overdue once the
time since its last epoch passes 1.25x its nominal interval (beyond any normal epoch), which
starts the label; the label is required when the gap goes on past 1.5x nominal for two
minutes, and optional otherwise (a detection there neither counts nor misses). Normal
behaviour that must not fire: the load ramp, runs ending normally (a short tail after the
last epoch, the last samples slower), a run's start (memory loading, throughput warming up),
one-sample latency blips, idle GPUs with nothing queued, memory flat at 80-87% of its limit.

``python -m benchmarks.observability_trace --seeds 0 1 2 [--quick]`` prints the scores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlops.monitoring.anomaly import (
    IDLE_GPUS,
    KINDS,
    LATENCY_SPIKE,
    MEMORY_GROWTH,
    RUN_STALLED,
    THROUGHPUT_COLLAPSE,
    Anomaly,
    Observations,
    Series,
    detect_all,
    episodes,
)

STEP = 15.0
ORIGIN = 1_767_225_600.0  # 2026-01-01 00:00 UTC
CAPACITY = 8
TOLERANCE_S = 60.0  # a detection may fall this far outside its interval and still match
OVERDUE = 1.25  # past the longest normal epoch (work +-15%, throughput noise): overdue
STALL_FACTOR, SURE_STALL_S = 1.5, 120.0  # overdue this far this long: surely stalled
MISSING = 0.005
QUICK_HOURS, QUICK_START_HOUR = 2.0, 8.0
PRECISION_TARGET = RECALL_TARGET = 0.9  # per kind
DELAY_TARGET_S = 120.0  # median, per kind


@dataclass(frozen=True)
class Truth:
    """One labelled episode. An optional one (a run overdue, but not surely stalled, which
    the trace cannot call either way) is neither missed nor a false positive."""

    kind: str
    resource: str
    start: float
    end: float
    required: bool = True


@dataclass(frozen=True)
class Trace:
    observations: Observations
    truth: tuple[Truth, ...]
    times: np.ndarray


@dataclass(frozen=True)
class KindScore:
    """Precision over detections (matched / all), recall over truths (detected / true), the
    median of detected_at minus the true onset over detected truths (NaN when none)."""

    precision: float
    recall: float
    median_delay_s: float
    detected: int
    true: int
    false_positives: int


def generate_trace(seed: int, hours: float = 24.0, start_hour: float = 0.0) -> Trace:
    """The trace: ``hours`` of samples from ``start_hour`` of the day; each anomaly kind is
    injected max(2, 6 per day) times."""
    rng = np.random.default_rng(seed)
    times = ORIGIN + start_hour * 3600 + np.arange(int(hours * 3600 / STEP)) * STEP
    count = max(2, round(6 * hours / 24))
    utilisation, queued, truth = _pool(rng, times, count)
    run_series, run_truth = _runs(rng, times, count, normal=max(3, round(8 * hours / 24)))
    p99, p99_truth = _latency(rng, times, count)
    observations = Observations(utilisation=[utilisation], queued=[queued], p99=p99,
                                **run_series)
    return Trace(observations, tuple(truth + run_truth + p99_truth), times)


def _place(rng: np.random.Generator, lo: int, hi: int, length: tuple[int, int],
           taken: list[tuple[int, int]], spacing: int) -> tuple[int, int]:
    """A random [start, end) in [lo, hi) of a length in ``length``, ``spacing`` samples
    clear of every interval in ``taken`` (which it joins)."""
    for _ in range(1000):
        size = int(rng.integers(*length))
        start = int(rng.integers(lo, max(lo + 1, hi - size)))
        if all(start + size + spacing <= a or start >= b + spacing for a, b in taken):
            taken.append((start, start + size))
            return start, start + size
    raise ValueError("no room left for another anomaly")


def _missing(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    return np.where(rng.random(len(values)) < MISSING, np.nan, values)


def _pool(rng: np.random.Generator, times: np.ndarray,
          count: int) -> tuple[Series, Series, list[Truth]]:
    hour = (times - ORIGIN) / 3600 % 24
    profile = 2 + 9 / (1 + np.exp(-(hour - 8.5) * 2)) - 9 / (1 + np.exp(-(hour - 19.5) * 2))
    wander = np.zeros(len(times))
    for i in range(1, len(times)):
        wander[i] = 0.995 * wander[i - 1] + rng.normal(0, 0.15)
    demand = np.maximum(np.round(profile + wander), 0)
    truth, stuck, taken = [], np.zeros(len(times), bool), []
    for _ in range(count):
        start, end = _place(rng, 20, len(times) - 20, (16, 81), taken, 120)
        demand[start - 20:end] = np.maximum(demand[start - 20:end],
                                            CAPACITY + rng.integers(2, 5))
        stuck[start:end] = True
        truth.append(Truth(IDLE_GPUS, "pool/gpu", float(times[start]),
                           float(times[end - 1])))
    running = np.minimum(demand, CAPACITY)
    queued = np.maximum(demand - CAPACITY, 0)
    for start, end in taken:  # the scheduler stops starting runs; running ones finish
        finished = 1 + np.cumsum(rng.random(end - start) < 0.03)
        running[start:end] = np.maximum(CAPACITY - finished, 0)
    handover = (queued > 0) & ~stuck & (rng.random(len(times)) < 0.03)
    running[handover | np.roll(handover & (rng.random(len(times)) < 0.5), 1)] -= 1
    labels = {"pool": "gpu"}
    return (Series(labels, times, _missing(rng, running / CAPACITY)),
            Series(labels, times, _missing(rng, queued)), truth)


def _runs(rng: np.random.Generator, times: np.ndarray, count: int,
          normal: int) -> tuple[dict[str, list[Series]], list[Truth]]:
    kinds = [THROUGHPUT_COLLAPSE, RUN_STALLED, MEMORY_GROWTH] * count + [""] * normal
    series: dict[str, list[Series]] = {"samples_per_s": [], "memory": [], "memory_limit": [],
                                       "progress": []}
    truth: list[Truth] = []
    for number, kind in enumerate(rng.permutation(kinds)):
        labels = {"run": f"run-{number:02d}", "team": "vision", "pool": "gpu", "model": "m"}
        length = min(int(rng.integers(240, 720)), len(times))
        start = int(rng.integers(0, len(times) - length + 1))
        high = not kind and number % 3 == 0
        exports, found = _run(rng, times[start:start + length], str(kind), high,
                              f"run/{labels['run']}")
        for name, values in exports.items():
            series[name].append(Series(labels, times[start:start + len(values)], values))
        truth += found
    return series, truth


def _run(rng: np.random.Generator, times: np.ndarray, kind: str, high: bool,
         resource: str) -> tuple[dict[str, np.ndarray], list[Truth]]:
    """One run's exports over its life and its labels; its last sample is its end."""
    n, nominal, base = len(times), rng.uniform(120, 300), rng.uniform(500, 5000)
    speed = base * np.minimum(1.0, 0.5 + np.arange(n) / 8) * rng.normal(1, 0.05, n)
    at = int(rng.integers(100, n - 110))  # the anomaly's first sample
    truth: list[Truth] = []
    frozen = np.zeros(n, bool)
    end = n
    if kind == THROUGHPUT_COLLAPSE:
        stop = at + int(rng.integers(16, 61))
        speed[at:stop] *= rng.uniform(0.1, 0.45)
        truth.append(Truth(kind, resource, float(times[at]), float(times[stop - 1])))
    elif kind == RUN_STALLED:
        frozen[at:at + int(rng.integers(32, 121))] = True
        if rng.random() < 0.5:  # killed while hung, else it recovers
            end = int(np.flatnonzero(frozen)[-1]) + 1
    progress, phase, last_epoch = _epochs(
        times, np.cumsum(np.where(frozen, 0.0, speed) * STEP), base * nominal, rng)
    checkpoints = np.flatnonzero(np.diff(progress)) + 1  # a slow sample after each epoch,
    # but not as the last one written before a hang, whose stale value would be a collapse
    checkpoints = checkpoints[~frozen[np.minimum(checkpoints + 1, n - 1)]]
    speed[checkpoints] *= rng.uniform(0.3, 0.8, len(checkpoints))
    if not kind:  # ends normally, shortly after its last epoch, its last samples slower
        end = min(n, last_epoch + int(rng.integers(2, 7)))
        speed[end - 2:end] *= rng.uniform(0.2, 1.0, 2)
    limit = float(2 ** rng.integers(34, 37))
    memory = _memory(rng, phase, limit, high)
    if kind == MEMORY_GROWTH:
        minutes = rng.uniform(8, 25)
        memory[at:] += (times[at:] - times[at]) * (limit - memory[at]) / (minutes * 60)
        end = int(np.argmax(memory >= limit))  # killed when it reaches its limit
        truth.append(Truth(kind, resource, float(times[at]), float(times[end - 1])))
    # A hung loop rewrites none of its exports: each repeats the last one written.
    written = np.maximum.accumulate(np.where(frozen, 0, np.arange(n)))
    exports = {name: _missing(rng, values[written][:end]) for name, values in
               {"samples_per_s": speed, "memory": memory, "progress": progress}.items()}
    exports["memory_limit"] = np.full(end, limit)
    return exports, truth + _stalls(times[:end], progress[:end], nominal, resource)


def _memory(rng: np.random.Generator, phase: np.ndarray, limit: float,
            high: bool) -> np.ndarray:
    """RSS: loaded over the first minute, then flat with noise, 1% more by an epoch's end."""
    level = rng.uniform(0.8, 0.87) if high else rng.uniform(0.45, 0.7)
    ramp = np.minimum(1.0, 0.2 + np.arange(len(phase)) / 4)
    return (level * ramp + 0.01 * phase + rng.normal(0, 0.003, len(phase))) * limit


def _epochs(times: np.ndarray, work: np.ndarray, size: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """At each sample, the time of the last finished epoch (the start before the first) and
    the share of the current epoch's work done; and the sample of the last epoch's end.
    Each epoch's work is ``size`` +-15%."""
    sizes = size * rng.uniform(0.85, 1.15, int(work[-1] / size * 1.5) + 2)
    bounds = np.concatenate(([0.0], np.cumsum(sizes)))
    done = np.searchsorted(bounds, work, side="right") - 1  # epochs finished by each sample
    at = np.searchsorted(done, np.arange(1, done[-1] + 1))  # the sample each one ends at
    over = (work[at] - bounds[1:len(at) + 1]) / np.maximum(work[at] - work[at - 1], 1.0)
    finish = np.concatenate(([times[0]], times[at] - STEP * np.clip(over, 0, 1)))
    phase = (work - bounds[done]) / sizes[done]
    return finish[done], phase, int(at[-1]) if len(at) else len(times) - 1


def _stalls(times: np.ndarray, progress: np.ndarray, nominal: float,
            resource: str) -> list[Truth]:
    """Each stretch overdue past OVERDUE x nominal (from its start); required when it
    goes on past STALL_FACTOR x nominal for SURE_STALL_S."""
    gap = times - progress  # grows within a stretch: progress is constant there
    found = []
    for first, _, last in episodes(times, gap > OVERDUE * nominal, 1, STEP * 1.5):
        sure = times[first:last + 1][gap[first:last + 1] > STALL_FACTOR * nominal]
        found.append(Truth(RUN_STALLED, resource, float(times[first]), float(times[last]),
                           bool(len(sure)) and float(times[last] - sure[0]) >= SURE_STALL_S))
    return found


def _latency(rng: np.random.Generator, times: np.ndarray,
             count: int) -> tuple[list[Series], list[Truth]]:
    hour = (times - ORIGIN) / 3600 % 24
    daily = 1 + 0.3 * np.sin(2 * np.pi * (hour - 9) / 24)
    values = [rng.uniform(0.03, 0.12) * daily * rng.lognormal(0, 0.08, len(times))
              for _ in range(3)]
    truth, taken = [], [[] for _ in values]
    for _ in range(count):
        instance = int(rng.integers(len(values)))
        start, end = _place(rng, 40, len(times) - 20, (12, 81), taken[instance], 120)
        values[instance][start:end] *= rng.uniform(2, 6)
        truth.append(Truth(LATENCY_SPIKE, f"service/serving-{instance}:8000",
                           float(times[start]), float(times[end - 1])))
    for p99 in values:  # one-sample blips
        blips = rng.integers(0, len(times), max(3, round(12 * len(times) / 5760)))
        p99[blips] *= rng.uniform(3, 8, len(blips))
    return [Series({"instance": f"serving-{i}:8000"}, times, _missing(rng, p99))
            for i, p99 in enumerate(values)], truth


def score(anomalies: Sequence[Anomaly], truth: Sequence[Truth],
          tolerance_s: float = TOLERANCE_S) -> dict[str, KindScore]:
    """Per kind: a detection matches a truth of its kind and resource when its onset or
    detected_at lies in the truth's interval widened by ``tolerance_s`` each side."""
    scores = {}
    for kind in KINDS:
        true = [t for t in truth if t.kind == kind]
        first: dict[int, float] = {}
        found = false = 0
        for a in (a for a in anomalies if a.kind == kind):
            hits = [i for i, t in enumerate(true) if t.resource == a.resource and any(
                t.start - tolerance_s <= x <= t.end + tolerance_s
                for x in (a.onset, a.detected_at))]
            if hits and not any(true[i].required for i in hits):
                continue
            found, false = found + 1, false + (not hits)
            for i in (i for i in hits if true[i].required):
                first[i] = min(first.get(i, np.inf), a.detected_at)
        required = sum(t.required for t in true)
        delays = [first[i] - true[i].start for i in first]
        scores[kind] = KindScore(
            1 - false / found if found else 1.0, len(first) / required if required else 1.0,
            statistics.median(delays) if delays else float("nan"), len(first), required,
            false)
    return scores


def run(seed: int, quick: bool = False) -> dict[str, KindScore]:
    """The detectors' scores on one trace: a day, or in quick mode two hours from 08:00."""
    trace = quick_trace(seed) if quick else generate_trace(seed)
    return score(detect_all(trace.observations), trace.truth)


def quick_trace(seed: int) -> Trace:
    return generate_trace(seed, QUICK_HOURS, QUICK_START_HOUR)


def missed_targets(scores: dict[str, KindScore]) -> list[str]:
    """The kinds whose precision, recall or median delay (when any was detected) misses
    its target."""
    return [kind for kind, s in scores.items()
            if s.precision < PRECISION_TARGET or s.recall < RECALL_TARGET
            or (s.detected and s.median_delay_s > DELAY_TARGET_S)]


def score_table(scores: dict[str, KindScore]) -> str:
    rows = ["| kind | precision | recall | median delay s | detected/true | false pos |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {k} | {s.precision:.2f} | {s.recall:.2f} | {s.median_delay_s:.0f} | "
             f"{s.detected}/{s.true} | {s.false_positives} |" for k, s in scores.items()]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Anomaly detectors on the labelled trace.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="a 2-hour trace")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        trace = quick_trace(seed) if args.quick else generate_trace(seed)
        started = time.perf_counter()
        found = detect_all(trace.observations)
        elapsed = time.perf_counter() - started
        scores = score(found, trace.truth)
        verdict = ", ".join(missed_targets(scores)) or "none"
        print(f"\nseed {seed}: {len(trace.times)} samples a series, detection took "
              f"{elapsed * 1e3:.0f} ms, targets missed: {verdict}\n{score_table(scores)}")


if __name__ == "__main__":
    main()
