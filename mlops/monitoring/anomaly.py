"""Causal anomaly detectors over the platform's utilisation series: idle GPUs while work is
queued, a training run's throughput collapsing, its memory growing towards its limit, a
serving instance's p99 latency spiking, and a run that stopped finishing epochs.

Every detector sees a window of 15 s samples (NaN samples are dropped) and returns one
``Anomaly`` per episode: a stretch where its condition holds for at least a minimum number
of samples, ended when it has not held for over ``Thresholds.max_gap_s``.
``onset`` is the stretch's first sample and ``detected_at`` the sample at which a detector
seeing only the samples up to then first flags it, so appending samples never changes an
earlier episode's ``detected_at``.

The baseline of throughput and latency is the median of a trailing window (one hour),
refreshed once a minute from the samples before the refresh, and the spread is the median
absolute deviation scaled by 1.4826 (so it estimates the standard deviation of Gaussian
noise). Median and MAD rather than mean and standard deviation because the window holds
the anomalies themselves: up to half the window can be a collapse or a spike without moving
the median, whereas one spike drags a mean and inflates a standard deviation enough to hide
the next. A deviation counts when it is both ``z`` robust deviations and a relative change
(half the throughput, 1.5x the latency): the first rejects noise, the second a perfectly
steady series whose MAD is near zero. pyod was considered and not used: its detectors
score points against a fitted training set rather than a trailing window per series, and
these conditions are a few lines of numpy.

Memory is judged against its limit, not a baseline: a least-squares line through the last
two minutes must rise significantly (z standard errors, the noise taken from the trailing
MAD of sample-to-sample steps) and reach the limit within 30 minutes. The fit is short so a
leak is caught within about two minutes; the price is that a sudden step of a few percent
near the limit also projects to it. A run is stalled when the time since its last finished
epoch exceeds 1.5x the median of its own recent epoch intervals, so the rule needs no
per-model setting and a run that ended (and stopped reporting) is never stalled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

IDLE_GPUS = "idle-gpus-with-work-queued"
THROUGHPUT_COLLAPSE = "throughput-collapse"
MEMORY_GROWTH = "memory-growing-towards-limit"
LATENCY_SPIKE = "latency-spike"
RUN_STALLED = "run-stalled"
KINDS = (IDLE_GPUS, THROUGHPUT_COLLAPSE, MEMORY_GROWTH, LATENCY_SPIKE, RUN_STALLED)
MAD_SCALE = 1.4826  # MAD x this estimates the standard deviation of Gaussian noise


@dataclass(frozen=True, eq=False)
class Series:
    """One time series: unix seconds and values (NaN where a scrape is missing)."""

    labels: dict[str, str]
    times: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class Anomaly:
    """One episode. ``value`` and ``baseline`` are at ``detected_at``: the sample and what
    was expected (the trailing median; the memory limit; 1.0 for a pool with work queued;
    the longest gap between epochs that is still normal, against the gap so far)."""

    kind: str
    resource: str
    onset: float
    detected_at: float
    value: float
    baseline: float
    message: str


@dataclass(frozen=True)
class Thresholds:
    """When each condition holds; counts are samples (15 s each)."""

    z: float = 6.0  # robust deviations from the trailing median
    persistence: int = 4  # one minute: a single slow scrape or request is not an anomaly
    baseline_window: int = 240  # one hour of trailing samples
    baseline_min: int = 20  # five minutes of history before a baseline is trusted
    baseline_refresh: int = 4  # recompute the median once a minute
    max_gap_s: float = 60.0  # this long without the condition (or samples) ends a stretch
    collapse_ratio: float = 0.5  # throughput below half its baseline
    spike_ratio: float = 1.5  # p99 above 1.5x its baseline
    # A pool with a free slot (utilisation < 1) while runs are queued: the controller should
    # start one within a period, so two minutes of it is a stuck scheduler or worker.
    idle_utilisation: float = 1.0
    idle_persistence: int = 8
    # Memory: the least-squares line through the last memory_fit samples reaches the limit
    # within memory_horizon_s and its slope is z standard errors above zero (noise from the
    # trailing MAD of first differences), or usage is above memory_high_ratio of the limit.
    memory_fit: int = 8
    memory_persistence: int = 2  # the fit already spans memory_fit samples
    memory_horizon_s: float = 1800.0
    memory_high_ratio: float = 0.9
    # Stalled: time since the last finished epoch above stall_factor x the median of the
    # run's last stall_epochs epoch intervals (at least stall_min_s); with fewer than
    # stall_min_epochs intervals known, above stall_fallback_s. The gap is itself a
    # duration, so one sample over it is enough. 1.5x because normal jitter of epoch times
    # stays well inside it; raise it for runs whose epochs vary more (periodic validation).
    stall_factor: float = 1.5
    stall_min_s: float = 120.0
    stall_epochs: int = 8
    stall_min_epochs: int = 2
    stall_fallback_s: float = 1800.0


DEFAULT_THRESHOLDS = Thresholds()


def rolling_median_mad(values: np.ndarray, window: int, minimum: int,
                       refresh: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing median and scaled MAD for each sample, from the (at most) ``window``
    non-NaN samples before the last refresh point at or before it (refresh points every
    ``refresh`` samples from the first); NaN while fewer than ``minimum`` are behind it."""
    points = np.arange(0, len(values), refresh)
    padded = np.concatenate((np.full(window, np.nan), np.asarray(values, dtype=float)))
    rows = sliding_window_view(padded, window)[points]  # row j holds values[j-window:j]
    median = _row_medians(rows)
    mad = _row_medians(np.abs(rows - median[:, None])) * MAD_SCALE
    too_few = np.count_nonzero(~np.isnan(rows), axis=1) < minimum
    median[too_few] = mad[too_few] = np.nan
    owner = np.arange(len(values)) // refresh
    return median[owner], mad[owner]


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """The median of each row's non-NaN entries (NaN for an empty row); sorting puts NaN
    last, which is faster than np.nanmedian over many short rows."""
    ordered = np.sort(rows, axis=1)
    count = np.count_nonzero(~np.isnan(rows), axis=1)
    low = np.maximum((count - 1) // 2, 0)[:, None]
    high = np.maximum(count // 2, 0)[:, None]
    return ((np.take_along_axis(ordered, low, 1) + np.take_along_axis(ordered, high, 1))
            / 2)[:, 0]


def episodes(times: np.ndarray, flags: np.ndarray, persistence: int,
             max_gap_s: float) -> list[tuple[int, int, int]]:
    """(first, detected, last) index of each stretch of flagged samples with at least
    ``persistence`` of them; a stretch ends when no sample is flagged for over ``max_gap_s``
    (a missing scrape or one sample just inside the threshold does not split an episode).
    detected is the stretch's ``persistence``-th flagged sample."""
    flagged = np.flatnonzero(flags)
    if len(flagged) == 0:
        return []
    split = np.flatnonzero(np.diff(times[flagged]) > max_gap_s) + 1
    return [(int(run[0]), int(run[persistence - 1]), int(run[-1]))
            for run in np.split(flagged, split) if len(run) >= persistence]


def _valid(series: Series) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(series.times, dtype=float)
    values = np.asarray(series.values, dtype=float)
    keep = np.isfinite(times) & np.isfinite(values)
    return times[keep], values[keep]


def _as_of(times: np.ndarray, other: Series, max_age_s: float) -> np.ndarray:
    """``other``'s latest value at or before each of ``times`` (NaN when older than
    ``max_age_s``): a causal join of two series scraped at slightly different instants."""
    other_times, other_values = _valid(other)
    index = np.searchsorted(other_times, times, side="right") - 1
    found = index >= 0
    joined = np.full(len(times), np.nan)
    joined[found] = other_values[index[found]]
    joined[found & (times - other_times[np.maximum(index, 0)] > max_age_s)] = np.nan
    return joined


def _resource(series: Series, prefix: str, label: str) -> str:
    return f"{prefix}/{series.labels.get(label, '?')}"


def _report(kind: str, resource: str, times: np.ndarray, values: np.ndarray,
            baseline: np.ndarray, found: list[tuple[int, int, int]],
            describe: Callable[[int], str]) -> list[Anomaly]:
    """One Anomaly per episode; ``describe`` says what happened at the detection index."""
    return [Anomaly(kind, resource, float(times[first]), float(times[at]), float(values[at]),
                    float(baseline[at]), f"{resource}: {describe(at)}")
            for first, at, _ in found]


def detect_idle_gpus(utilisation: Series, queued: Series,
                     thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """A pool with a free slot while runs are queued for it (labels: pool)."""
    t = thresholds
    times, used = _valid(utilisation)
    waiting = _as_of(times, queued, t.max_gap_s)
    flags = (used < t.idle_utilisation) & (waiting > 0)
    return _report(IDLE_GPUS, _resource(utilisation, "pool", "pool"), times, used,
                   np.ones(len(used)), episodes(times, flags, t.idle_persistence, t.max_gap_s),
                   lambda i: f"utilisation {used[i]:.2f} with {waiting[i]:.0f} runs queued")


def detect_throughput_collapse(samples_per_s: Series,
                               thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """A training run's samples/s far below its trailing median (labels: run)."""
    t = thresholds
    times, values = _valid(samples_per_s)
    median, mad = rolling_median_mad(values, t.baseline_window, t.baseline_min,
                                     t.baseline_refresh)
    flags = (values < median - t.z * mad) & (values < t.collapse_ratio * median)
    return _report(THROUGHPUT_COLLAPSE, _resource(samples_per_s, "run", "run"), times, values,
                   median, episodes(times, flags, t.persistence, t.max_gap_s),
                   lambda i: f"{values[i]:.4g} samples/s against a median of {median[i]:.4g}")


def detect_latency_spike(p99: Series,
                         thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """A serving instance's p99 latency far above its trailing median (labels: instance)."""
    t = thresholds
    times, values = _valid(p99)
    median, mad = rolling_median_mad(values, t.baseline_window, t.baseline_min,
                                     t.baseline_refresh)
    flags = (values > median + t.z * mad) & (values > t.spike_ratio * median)
    return _report(LATENCY_SPIKE, _resource(p99, "service", "instance"), times, values, median,
                   episodes(times, flags, t.persistence, t.max_gap_s),
                   lambda i: f"p99 {values[i] * 1e3:.0f} ms against a median of "
                             f"{median[i] * 1e3:.0f} ms")


def detect_memory_growth(memory: Series, limit: Series,
                         thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """A run's memory on course to reach its limit within the horizon, or above
    ``memory_high_ratio`` of it (labels: run)."""
    t = thresholds
    times, used = _valid(memory)
    ceiling = _as_of(times, limit, t.max_gap_s)
    ratio = used / ceiling
    slope, level, time_spread = _trailing_fit(times, ratio, t.memory_fit)
    steps = np.diff(ratio, prepend=np.nan)
    steps[steps == 0] = np.nan  # a stale export repeats itself: that is not the noise
    _, diff_spread = rolling_median_mad(steps, t.baseline_window, t.baseline_min,
                                        t.baseline_refresh)
    spread = diff_spread / np.sqrt(2)  # a difference of two samples doubles the variance
    growing = ((slope > t.z * spread / time_spread)  # the slope's standard error
               & (level + slope * t.memory_horizon_s >= 1.0))
    flags = growing | (ratio > t.memory_high_ratio)
    return _report(MEMORY_GROWTH, _resource(memory, "run", "run"), times, used, ceiling,
                   episodes(times, flags, t.memory_persistence, t.max_gap_s),
                   lambda i: f"memory at {ratio[i]:.0%} of its limit"
                             + (f", rising {slope[i] * 60:.1%} of it a minute" if growing[i]
                                else ""))


def _trailing_fit(times: np.ndarray, values: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the least-squares line through each sample and the ``size - 1`` before it: its
    slope, its value at the sample, and sqrt(sum (t - mean t)^2), over which the noise's
    standard deviation is the slope's standard error (NaN for the first samples)."""
    fit = np.full((3, len(values)), np.nan)
    if len(values) >= size:
        t_rows, y_rows = sliding_window_view(times, size), sliding_window_view(values, size)
        t_mean, y_mean = t_rows.mean(axis=1), y_rows.mean(axis=1)
        centred = t_rows - t_mean[:, None]
        spread = (centred**2).sum(axis=1)
        slope = (centred * (y_rows - y_mean[:, None])).sum(axis=1) / spread
        fit[:, size - 1:] = (slope, y_mean + slope * (times[size - 1:] - t_mean),
                             np.sqrt(spread))
    return fit[0], fit[1], fit[2]


def detect_stalled_run(progress_ts: Series,
                       thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """A run still reporting whose last finished epoch is overdue (labels: run). The input is
    the unix time of the last finished epoch, sampled like any gauge; a run that ended
    normally stops reporting and is never stalled."""
    t = thresholds
    times, progress = _valid(progress_ts)
    allowed = _allowed_gap(progress, t)
    since = times - progress
    return _report(RUN_STALLED, _resource(progress_ts, "run", "run"), times, since, allowed,
                   episodes(times, since > allowed, 1, t.max_gap_s),
                   lambda i: f"no epoch finished for {since[i] / 60:.1f} min (normal at most "
                             f"{allowed[i] / 60:.1f} min)")


def _allowed_gap(progress: np.ndarray, t: Thresholds) -> np.ndarray:
    """For each sample, the longest normal gap since the last epoch, from the epoch
    intervals known at that sample."""
    if len(progress) == 0:
        return np.empty(0)
    changed = np.concatenate(([True], progress[1:] != progress[:-1]))
    finished = progress[changed]  # each distinct epoch time, in the order seen
    intervals = np.abs(np.diff(finished))
    padded = np.concatenate((np.full(t.stall_epochs, np.nan), intervals))
    rows = sliding_window_view(padded, t.stall_epochs)  # row k: intervals known at epoch k
    known = np.minimum(np.arange(len(rows)), t.stall_epochs)
    allowed = np.maximum(t.stall_factor * _row_medians(rows), t.stall_min_s)
    allowed[known < t.stall_min_epochs] = t.stall_fallback_s
    epoch_index = np.cumsum(changed) - 1  # distinct epochs seen up to each sample, minus 1
    return allowed[epoch_index]


@dataclass(frozen=True)
class Observations:
    """Every series the detectors read. Pools pair utilisation with queued by the pool
    label, runs pair memory with its limit by the run label."""

    utilisation: Sequence[Series] = ()
    queued: Sequence[Series] = ()
    samples_per_s: Sequence[Series] = ()
    memory: Sequence[Series] = ()
    memory_limit: Sequence[Series] = ()
    p99: Sequence[Series] = ()
    progress: Sequence[Series] = ()


def detect_all(observations: Observations,
               thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """Every detector over every series it applies to, sorted by ``detected_at``."""
    o, t = observations, thresholds
    queued = {s.labels.get("pool"): s for s in o.queued}
    limits = {s.labels.get("run"): s for s in o.memory_limit}
    found: list[Anomaly] = []
    for pool in o.utilisation:
        if pool.labels.get("pool") in queued:
            found += detect_idle_gpus(pool, queued[pool.labels.get("pool")], t)
    for used in o.memory:
        if used.labels.get("run") in limits:
            found += detect_memory_growth(used, limits[used.labels.get("run")], t)
    for series in o.samples_per_s:
        found += detect_throughput_collapse(series, t)
    for series in o.p99:
        found += detect_latency_spike(series, t)
    for series in o.progress:
        found += detect_stalled_run(series, t)
    return sorted(found, key=lambda a: (a.detected_at, a.kind, a.resource))
