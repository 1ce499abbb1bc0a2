"""The anomaly detectors: each fires on its anomaly with the right resource and onset, stays
quiet on the normal behaviour that resembles it, sees no future samples, and survives
missing scrapes; then the labelled quick trace, scored against the benchmark's targets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from benchmarks.observability_trace import Truth, missed_targets, quick_trace, run, score
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
    detect_idle_gpus,
    detect_latency_spike,
    detect_memory_growth,
    detect_stalled_run,
    detect_throughput_collapse,
    episodes,
    rolling_median_mad,
)

T0 = 1_767_225_600.0
STEP = 15.0
RUN = {"run": "r1", "team": "vision", "pool": "gpu", "model": "m"}
POOL = {"pool": "gpu"}
SERVICE = {"instance": "serving-0:8000"}
GIB = 2.0**30


def at(index: int) -> float:
    return T0 + index * STEP


def series(values: np.ndarray, labels: dict[str, str]) -> Series:
    return Series(labels, T0 + np.arange(len(values)) * STEP, np.asarray(values, float))


def noisy(level: float, n: int, spread: float, seed: int = 0) -> np.ndarray:
    return level * np.random.default_rng(seed).normal(1, spread, n)


def throughput(n: int = 480, collapse: tuple[int, int] | None = (200, 240)) -> np.ndarray:
    values = noisy(1000, n, 0.05)
    values[::12] *= 0.4  # the slow sample after each epoch's checkpoint
    if collapse:
        values[collapse[0]:collapse[1]] *= 0.2
    return values


def memory(n: int = 480, leak_at: int | None = 200, level: float = 0.6) -> np.ndarray:
    ratio = level + np.random.default_rng(1).normal(0, 0.003, n)
    if leak_at is not None:  # reaches the limit 15 minutes after it starts
        ratio[leak_at:] += np.arange(n - leak_at) * (1 - level) / 60
        ratio = ratio[ratio < 1]
    return ratio * 32 * GIB


def latency(n: int = 480, spike: tuple[int, int] | None = (300, 320)) -> np.ndarray:
    values = noisy(0.05, n, 0.08, seed=2)
    if spike:
        values[spike[0]:spike[1]] *= 3
    return values


def progress(n: int = 480, stop_after_s: float = 3600.0, seed: int = 3) -> np.ndarray:
    """The time of the last epoch (every 180 s +-10%) at each sample; none after stop."""
    finished = T0 + np.cumsum(np.random.default_rng(seed).uniform(162, 198, 100))
    finished = np.concatenate(([T0], finished[finished <= T0 + stop_after_s]))
    times = T0 + np.arange(n) * STEP
    return finished[np.searchsorted(finished, times, side="right") - 1]


def pool(n: int = 120, idle: tuple[int, int] | None = (40, 60)) -> tuple[Series, Series]:
    used, queued = np.ones(n), np.full(n, 2.0)
    if idle:
        used[idle[0]:idle[1]] = 6 / 8
    return series(used, POOL), series(queued, POOL)


DETECTORS: dict[str, Callable[[], list[Anomaly]]] = {
    IDLE_GPUS: lambda: detect_idle_gpus(*pool()),
    THROUGHPUT_COLLAPSE: lambda: detect_throughput_collapse(series(throughput(), RUN)),
    MEMORY_GROWTH: lambda: detect_memory_growth(series(memory(), RUN),
                                                series(np.full(480, 32 * GIB), RUN)),
    LATENCY_SPIKE: lambda: detect_latency_spike(series(latency(), SERVICE)),
    RUN_STALLED: lambda: detect_stalled_run(series(progress(), RUN)),
}


def test_rolling_median_ignores_a_minority_of_outliers_and_sees_only_the_past() -> None:
    values = np.full(200, 10.0)
    values[100:140] = 1000.0  # 40 outliers in a 120-sample window
    median, mad = rolling_median_mad(values, window=120, minimum=20, refresh=4)
    assert np.isnan(median[:20]).all()
    assert (median[20:] == 10.0).all() and (mad[20:] == 0.0).all()
    changed = values.copy()
    changed[150:] = 0.0  # a refresh point sees only the samples before it
    assert np.array_equal(rolling_median_mad(changed, 120, 20, 4)[0][:152], median[:152],
                          equal_nan=True)


def test_episodes_count_flagged_samples_and_bridge_short_holes() -> None:
    times = T0 + np.arange(20) * STEP
    flags = np.zeros(20, bool)
    flags[[2, 3, 5, 6]] = True  # one unflagged sample inside: one episode of four
    flags[[12, 17]] = True  # 75 s apart: two one-sample stretches
    assert episodes(times, flags, 4, 60.0) == [(2, 6, 6)]
    assert episodes(times, flags, 1, 60.0) == [(2, 2, 6), (12, 12, 12), (17, 17, 17)]


@pytest.mark.parametrize(("kind", "resource", "onset"), [
    (IDLE_GPUS, "pool/gpu", at(40)),
    (THROUGHPUT_COLLAPSE, "run/r1", at(200)),
    (LATENCY_SPIKE, "service/serving-0:8000", at(300)),
])
def test_each_detector_fires_once_at_its_anomaly(kind: str, resource: str,
                                                 onset: float) -> None:
    (found,) = DETECTORS[kind]()
    assert (found.kind, found.resource, found.onset) == (kind, resource, onset)
    persistence = 8 if kind == IDLE_GPUS else 4
    assert found.detected_at == onset + (persistence - 1) * STEP
    assert found.message.startswith(resource)


def test_a_memory_leak_is_caught_within_two_minutes_of_its_start() -> None:
    (found,) = DETECTORS[MEMORY_GROWTH]()
    assert (found.kind, found.resource, found.baseline) == (MEMORY_GROWTH, "run/r1", 32 * GIB)
    assert at(200) <= found.onset and found.detected_at <= at(200) + 120


def test_a_stalled_run_is_caught_past_one_and_a_half_epochs() -> None:
    stalled = progress()
    last = stalled[-1]
    (found,) = DETECTORS[RUN_STALLED]()
    assert (found.kind, found.resource) == (RUN_STALLED, "run/r1")
    assert 1.4 * 180 < found.detected_at - last < 1.6 * 200
    assert found.value > found.baseline and found.onset == found.detected_at


def test_normal_behaviour_never_fires() -> None:
    used, queued = pool(idle=None)
    day = np.arange(5760)
    seasonal = noisy(0.05, 5760, 0.08) * (1 + 0.3 * np.sin(2 * np.pi * day / 5760))
    blip = latency(spike=None)
    blip[300] *= 8
    ramp_used = np.minimum(np.arange(120) / 60, 1.0)  # load rising, then work queueing
    ramp_queued = np.maximum(np.arange(120) - 60, 0) / 10.0
    handover = np.ones(120)
    handover[[30, 31, 70]] = 7 / 8  # a run finished; the next starts within 30 s
    ended = throughput(collapse=None)[:400]
    ended[-2:] *= 0.2  # the last samples of a run that ends
    finished = progress(stop_after_s=5700.0)
    finished = finished[:np.argmax(finished == finished[-1]) + 4]  # ends a minute after
    quiet: list[Anomaly] = [
        *detect_idle_gpus(used, queued),
        *detect_idle_gpus(series(np.full(120, 0.25), POOL), series(np.zeros(120), POOL)),
        *detect_idle_gpus(series(ramp_used, POOL), series(ramp_queued, POOL)),
        *detect_idle_gpus(series(handover, POOL), queued),
        *detect_throughput_collapse(series(ended, RUN)),
        *detect_latency_spike(series(blip, SERVICE)),
        *detect_latency_spike(series(seasonal, SERVICE)),
        *detect_memory_growth(series(memory(960, None, 0.85), RUN),
                              series(np.full(960, 32 * GIB), RUN)),
        *detect_stalled_run(series(finished, RUN)),
    ]
    assert quiet == []


def test_memory_above_ninety_percent_fires_even_when_flat() -> None:
    (found,) = detect_memory_growth(series(memory(120, None, 0.95), RUN),
                                    series(np.full(120, 32 * GIB), RUN))
    assert found.onset == at(0) and found.value / found.baseline > 0.9


def test_a_stale_memory_export_does_not_make_the_next_step_significant() -> None:
    ratio = memory(480, None, 0.7) / (32 * GIB)
    ratio[100:300] = ratio[99]  # a hung loop stops rewriting its textfile
    ratio[300:] += 0.01
    assert detect_memory_growth(series(ratio * 32 * GIB, RUN),
                                series(np.full(480, 32 * GIB), RUN)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_detection_is_causal(kind: str) -> None:
    full = DETECTORS[kind]()
    assert full
    for found in full:
        cut = truncate_inputs(kind, found.detected_at)
        assert (found.onset, found.detected_at) in [(a.onset, a.detected_at) for a in cut]


def truncate_inputs(kind: str, until: float) -> list[Anomaly]:
    """The detector of ``kind`` on its usual inputs, with every sample after ``until``
    dropped."""
    def cut(s: Series) -> Series:
        keep = s.times <= until
        return Series(s.labels, s.times[keep], s.values[keep])
    if kind == IDLE_GPUS:
        return detect_idle_gpus(*(cut(s) for s in pool()))
    if kind == MEMORY_GROWTH:
        return detect_memory_growth(cut(series(memory(), RUN)),
                                    cut(series(np.full(480, 32 * GIB), RUN)))
    make = {THROUGHPUT_COLLAPSE: (detect_throughput_collapse, throughput, RUN),
            LATENCY_SPIKE: (detect_latency_spike, latency, SERVICE),
            RUN_STALLED: (detect_stalled_run, progress, RUN)}
    detect, values, labels = make[kind]
    return detect(cut(series(values(), labels)))


def test_appending_samples_keeps_earlier_episodes() -> None:
    early = detect_throughput_collapse(series(throughput(300), RUN))
    later = throughput(600, collapse=None)
    later[200:240] *= 0.2
    later[450:500] *= 0.2
    (first, second) = detect_throughput_collapse(series(later, RUN))
    assert [(a.onset, a.detected_at) for a in early] == [(first.onset, first.detected_at)]
    assert second.onset == at(450)


def test_missing_scrapes_neither_split_nor_hide_an_episode() -> None:
    values = throughput()
    values[[150, 202, 220, 221]] = np.nan  # one before, three inside the collapse
    (found,) = detect_throughput_collapse(series(values, RUN))
    assert found.onset == at(200) and found.detected_at == at(204)
    p99 = latency()
    p99[7::23] = np.nan  # every 23rd scrape missing, one of them inside the spike
    assert [a.onset for a in detect_latency_spike(series(p99, SERVICE))] == [at(300)]
    stalled = progress().astype(float)
    stalled[-60:-50] = np.nan  # a scrape gap while stalled
    assert len(detect_stalled_run(series(stalled, RUN))) == 2  # a 150 s gap ends an episode
    assert detect_latency_spike(series(np.full(100, np.nan), SERVICE)) == []
    empty = series(np.array([]), RUN)
    for detect in (detect_throughput_collapse, detect_latency_spike, detect_stalled_run):
        assert detect(empty) == []
    assert detect_memory_growth(empty, empty) == detect_idle_gpus(empty, empty) == []


def test_detect_all_pairs_series_by_label_and_sorts_by_detection() -> None:
    used, queued = pool()
    other = {"run": "r2"}
    observations = Observations(
        utilisation=[used], queued=[queued],
        samples_per_s=[series(throughput(), RUN)], p99=[series(latency(), SERVICE)],
        memory=[series(memory(), RUN), series(memory(), other)],
        memory_limit=[series(np.full(480, 32 * GIB), RUN)],  # none for r2: skipped
        progress=[series(progress(), RUN)])
    found = detect_all(observations)
    assert sorted({a.kind for a in found}) == sorted(KINDS)
    assert [a.detected_at for a in found] == sorted(a.detected_at for a in found)
    assert {a.resource for a in found if a.kind == MEMORY_GROWTH} == {"run/r1"}


def test_score_matches_by_kind_resource_and_tolerance() -> None:
    truth = [Truth(LATENCY_SPIKE, "service/a", 1000.0, 1300.0),
             Truth(LATENCY_SPIKE, "service/b", 1000.0, 1300.0),
             Truth(RUN_STALLED, "run/r", 5000.0, 5050.0, required=False)]
    found = [Anomaly(LATENCY_SPIKE, "service/a", 960.0, 1030.0, 1, 1, ""),  # within 60 s
             Anomaly(LATENCY_SPIKE, "service/b", 2000.0, 2045.0, 1, 1, ""),  # too late
             Anomaly(RUN_STALLED, "run/r", 5040.0, 5040.0, 1, 1, "")]  # optional: ignored
    scores = score(found, truth)
    spike = scores[LATENCY_SPIKE]
    assert (spike.precision, spike.recall, spike.median_delay_s) == (0.5, 0.5, 30.0)
    assert (spike.detected, spike.true, spike.false_positives) == (1, 2, 1)
    stall = scores[RUN_STALLED]
    assert (stall.precision, stall.recall, stall.true, stall.false_positives) == (1, 1, 0, 0)
    assert missed_targets(scores) == [LATENCY_SPIKE]


def test_the_quick_trace_meets_the_targets() -> None:
    trace = quick_trace(0)
    assert len(trace.times) == 480  # two hours of 15 s samples
    assert len(trace.observations.progress) >= 9  # 2 runs per anomaly kind, 3 normal
    scores = run(0, quick=True)
    assert set(scores) == set(KINDS)
    assert all(result.true >= 2 for result in scores.values()), scores
    assert missed_targets(scores) == [], scores
    assert scores[MEMORY_GROWTH].median_delay_s > 0  # measured, not a placeholder
