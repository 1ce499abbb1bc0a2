"""What a simulated run of a pool (``simulator``) achieved (its plot: ``plots``).

Every metric is read from the run's samples (per-team running and queued counts, constant
between event instants) and per-job outcomes, the same way for every scheduler:

- utilisation: busy slot-time over capacity-time, only while demand (running plus queued)
  is at least the capacity: idle slots then are the scheduler's fault, not the trace's.
- Jain's fairness index per window (default 60 s) over the teams backlogged (queued work)
  for the whole window, on weight-normalised shares x_i = mean slots_i / w_i; windows with
  fewer than two such teams say nothing about sharing and are skipped.
- p99 queue wait per team: first start minus arrival (nearest rank).
- reclaim latency: each time a team with a quota goes from no demand to demand, the time
  until it holds min(quota, demand) slots (0 when it starts at once).
- preemptions and the GPU time they wasted (work since the last checkpoint).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from benchmarks.fairshare_sim.simulator import SimResult


@dataclass(frozen=True)
class Metrics:
    """One scheduler's scores on one trace."""

    scheduler: str
    utilisation: float  # nan when demand never reached the capacity
    jain_mean: float  # nan when no window had two backlogged teams
    jain_median: float
    jain_windows: int
    wait_p99_s: dict[str, float]
    reclaim_s: list[float]
    preemptions: int
    lost_gpu_hours: float
    makespan_s: float


def jain_index(values: Sequence[float]) -> float:
    """Jain's index (sum x)^2 / (n sum x^2): 1 when all are equal, 1/n when one has all.
    All zero counts as equal (1)."""
    if not values:
        raise ValueError("Jain's index of no values")
    squares = sum(v * v for v in values)
    return 1.0 if squares == 0 else sum(values) ** 2 / (len(values) * squares)


def segments(result: SimResult) -> Iterator[tuple[float, float, int]]:
    """(start, end, sample index) of each interval over which the counts are constant."""
    times = result.times
    for index in range(len(times) - 1):
        if times[index + 1] > times[index]:
            yield times[index], times[index + 1], index


def utilisation(result: SimResult) -> float:
    """Busy share of the pool over the time demand was at least the capacity."""
    busy = span = 0.0
    names = [t.name for t in result.teams]
    for start, end, i in segments(result):
        held = sum(result.running[n][i] for n in names)
        if held + sum(result.queued[n][i] for n in names) >= result.capacity:
            busy += held * (end - start)
            span += result.capacity * (end - start)
    return busy / span if span else math.nan


def windowed_jain(result: SimResult, window_s: float = 60.0) -> list[float]:
    """Jain's index of each window in which at least two teams were backlogged throughout,
    on their weight-normalised mean slots."""
    slot_time: dict[int, dict[str, float]] = {}
    backlog_time: dict[int, dict[str, float]] = {}
    for start, end, i in segments(result):
        for window, lo, hi in _split(start, end, window_s):
            slots = slot_time.setdefault(window, {})
            backlog = backlog_time.setdefault(window, {})
            for name in result.running:
                slots[name] = slots.get(name, 0.0) + result.running[name][i] * (hi - lo)
                if result.queued[name][i] > 0:
                    backlog[name] = backlog.get(name, 0.0) + hi - lo
    weights = {t.name: t.weight for t in result.teams}
    scores = []
    for window, backlog in sorted(backlog_time.items()):
        full = [name for name, time in backlog.items() if time >= window_s * (1 - 1e-9)]
        if len(full) >= 2:
            shares = [slot_time[window][name] / window_s / weights[name] for name in full]
            scores.append(jain_index(shares))
    return scores


def _split(start: float, end: float, window_s: float) -> Iterator[tuple[int, float, float]]:
    """Cut [start, end) at window boundaries: (window number, from, to)."""
    window = int(start // window_s)
    while start < end:
        edge = min(end, (window + 1) * window_s)
        yield window, start, edge
        start, window = edge, window + 1


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def wait_p99(result: SimResult) -> dict[str, float]:
    """Per team, the 99th percentile of first start minus arrival."""
    waits: dict[str, list[float]] = {t.name: [] for t in result.teams}
    for job in result.jobs:
        waits[job.team].append(result.first_start[job.id] - job.arrival)
    return {name: percentile(values, 99) for name, values in waits.items()}


def reclaim_latencies(result: SimResult) -> list[float]:
    """Per episode (a team with a quota goes from no demand to demand), the time until it
    holds min(quota, demand) slots."""
    latencies = []
    for team in result.teams:
        if team.quota == 0 or team.over_budget:
            continue
        opened: float | None = None
        previous = 0
        for i, now in enumerate(result.times):
            held = result.running[team.name][i]
            demand = held + result.queued[team.name][i]
            if previous == 0 and demand > 0:
                opened = now
            if opened is not None and held >= min(team.quota, demand):
                latencies.append(now - opened)
                opened = None
            previous = demand
    return latencies


def summarise(result: SimResult, window_s: float = 60.0) -> Metrics:
    """All the metrics of one run."""
    jain = windowed_jain(result, window_s)
    return Metrics(
        scheduler=result.scheduler,
        utilisation=utilisation(result),
        jain_mean=statistics.fmean(jain) if jain else math.nan,
        jain_median=statistics.median(jain) if jain else math.nan,
        jain_windows=len(jain),
        wait_p99_s=wait_p99(result),
        reclaim_s=reclaim_latencies(result),
        preemptions=result.preemptions,
        lost_gpu_hours=sum(result.lost_s.values()) / 3600,
        makespan_s=result.times[-1] if result.times else 0.0,
    )
