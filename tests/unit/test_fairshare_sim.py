"""The fair-share simulator and its metrics: hand-made traces whose outcome is known."""

import bisect
import math

import pytest

from benchmarks.fairshare_sim.plots import plot_allocation
from benchmarks.fairshare_sim.scores import (
    jain_index,
    reclaim_latencies,
    summarise,
    utilisation,
    windowed_jain,
)
from benchmarks.fairshare_sim.simulator import Job, SimResult, bursty_trace, simulate
from mlops.fairshare.policy import TeamPolicy

PERIOD = 10.0


def _jobs(team: str, count: int, at: float, duration: float | list[float],
          priority: str = "normal") -> list[Job]:
    durations = duration if isinstance(duration, list) else [duration] * count
    return [Job(f"{team}-{at:g}-{k}", team, at, durations[k], priority) for k in range(count)]


def _held(result: SimResult, team: str, time: float) -> int:
    """Running slots of a team at a time (the last sample at or before it)."""
    return result.running[team][bisect.bisect_right(result.times, time) - 1]


def _starts(result: SimResult) -> list[str]:
    return sorted(result.first_start, key=lambda job_id: (result.first_start[job_id], job_id))


def _completed_exactly(result: SimResult) -> bool:
    return all(job.id in result.finish and math.isclose(result.work_done[job.id], job.duration)
               for job in result.jobs)


TWO = [TeamPolicy("a", 1.0, 4), TeamPolicy("b", 1.0, 4)]
# a fills the pool at 0 (8 runs ending at 100, 200, ... 800, 4 more queued); b arrives at 15
# with 4 long runs.
RECLAIM = (_jobs("a", 8, 0.0, [100.0 * (k + 1) for k in range(8)]) + _jobs("a", 4, 1.0, 1000.0)
           + _jobs("b", 4, 15.0, 1000.0))


def test_a_team_alone_borrows_the_pool_under_fair_share_but_not_static_limits() -> None:
    teams = [TeamPolicy("a", 1.0, 2), TeamPolicy("b", 1.0, 6)]
    trace = _jobs("a", 8, 0.0, 100.0)
    shared = simulate(8, teams, trace, "fair-share", PERIOD)
    static = simulate(8, teams, trace, "static-limits", PERIOD)
    assert max(shared.running["a"]) == 8 and shared.finish[trace[-1].id] == 100.0
    assert max(static.running["a"]) == 2 and max(static.finish.values()) == 400.0
    assert utilisation(shared) == 1.0 and utilisation(static) == pytest.approx(0.25)


def test_reclaim_without_preemption_waits_for_borrowed_runs_to_end() -> None:
    result = simulate(8, TWO, RECLAIM, "fair-share", PERIOD)
    # After the tick at 20, a refills none of its freed slots until b holds its quota of 4:
    # b gets the slots of a's runs ending at 100, 200, 300 and 400.
    assert [_held(result, "b", t) for t in (19.0, 99.0, 100.0, 250.0, 399.0, 400.0)] == [
        0, 0, 1, 2, 3, 4]
    assert [_held(result, "a", t) for t in (99.0, 100.0, 399.0, 400.0)] == [8, 7, 5, 4]
    assert reclaim_latencies(result) == [0.0, 385.0]  # a at 0 (at once), b from 15 to 400
    assert result.preemptions == 0 and _completed_exactly(result)


def test_reclaim_with_preemption_within_one_period_losing_at_most_a_checkpoint() -> None:
    result = simulate(8, TWO, RECLAIM, "fair-share+preemption", PERIOD, checkpoint_s=15.0)
    assert _held(result, "b", 19.0) == 0 and _held(result, "b", 20.0) == 4
    assert reclaim_latencies(result) == [0.0, 5.0]
    assert result.preemptions == 4
    lost = [seconds for seconds in result.lost_s.values() if seconds > 0]
    assert lost == [5.0] * 4  # 20 s done, 15 s of it checkpointed
    assert all(seconds <= 15.0 for seconds in result.lost_s.values())
    assert _completed_exactly(result)  # the preempted runs resumed and did all their work
    victims = [job for job in RECLAIM if result.lost_s[job.id] > 0]
    assert all(result.finish[job.id] > job.duration for job in victims)


def test_weights_two_to_one_give_two_to_one_slots_while_both_are_backlogged() -> None:
    teams = [TeamPolicy("heavy", 2.0, 0), TeamPolicy("light", 1.0, 0)]
    trace = _jobs("heavy", 40, 0.0, 90.0) + _jobs("light", 40, 0.0, 90.0)
    result = simulate(9, teams, trace, "fair-share", PERIOD)
    both = [i for i, _ in enumerate(result.times)
            if result.queued["heavy"][i] > 0 and result.queued["light"][i] > 0]
    assert both
    assert all((result.running["heavy"][i], result.running["light"][i]) == (6, 3) for i in both)
    assert min(windowed_jain(result)) == pytest.approx(1.0)


def test_fifo_starts_runs_in_arrival_order_whatever_the_team() -> None:
    teams = [TeamPolicy("a", 1.0, 1), TeamPolicy("b", 1.0, 0)]
    trace = [Job("b1", "b", 0.0, 10.0), Job("a1", "a", 1.0, 10.0), Job("b2", "b", 2.0, 10.0),
             Job("a2", "a", 3.0, 10.0)]
    result = simulate(1, teams, trace, "fifo", PERIOD)
    assert _starts(result) == ["b1", "a1", "b2", "a2"]
    assert [result.first_start[j] for j in _starts(result)] == [0.0, 10.0, 20.0, 30.0]


def test_strict_priority_serves_the_best_ranked_team_first() -> None:
    teams = [TeamPolicy("a", 1.0, 1), TeamPolicy("b", 1.0, 0)]  # a ranks first
    trace = [Job("b1", "b", 0.0, 10.0), Job("a1", "a", 1.0, 10.0), Job("b2", "b", 2.0, 10.0),
             Job("a2", "a", 3.0, 10.0)]
    result = simulate(1, teams, trace, "strict-priority", PERIOD)
    assert _starts(result) == ["b1", "a1", "a2", "b2"]  # a2 passes b2, which came earlier


def test_strict_priority_has_no_queue_limits_and_static_limits_caps_each_team() -> None:
    teams = [TeamPolicy("a", 1.0, 1), TeamPolicy("b", 1.0, 1)]
    trace = _jobs("a", 3, 0.0, 10.0) + _jobs("b", 3, 0.0, 10.0)
    strict = simulate(4, teams, trace, "strict-priority", PERIOD)
    static = simulate(4, teams, trace, "static-limits", PERIOD)
    assert (_held(strict, "a", 0.0), _held(strict, "b", 0.0)) == (3, 1)
    assert (_held(static, "a", 0.0), _held(static, "b", 0.0)) == (1, 1)


def test_jain_index_of_equal_shares_is_one_and_of_one_and_zero_is_a_half() -> None:
    assert jain_index([3.0, 3.0, 3.0]) == 1.0
    assert jain_index([1.0, 0.0]) == 0.5
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == 0.25


def test_the_simulator_and_the_trace_are_deterministic_for_a_seed() -> None:
    teams = [TeamPolicy(name, weight, quota)
             for name, weight, quota in (("a", 1, 3), ("b", 1, 3), ("c", 2, 6), ("d", 1, 3))]
    names = [t.name for t in teams]
    trace = bursty_trace(names, 3600.0, seed=3)
    assert trace == bursty_trace(names, 3600.0, seed=3) != bursty_trace(names, 3600.0, seed=4)
    first = simulate(16, teams, trace, "fair-share+preemption", PERIOD)
    second = simulate(16, teams, list(reversed(trace)), "fair-share+preemption", PERIOD)
    assert (first.times, first.running, first.queued) == (
        second.times, second.running, second.queued)
    assert first.first_start == second.first_start and summarise(first) == summarise(second)
    assert _completed_exactly(first)


def test_bursty_trace_has_teams_that_come_and_go() -> None:
    trace = bursty_trace(["a", "b", "c"], 4 * 3600.0, seed=1)
    for team in "abc":
        arrivals = [job.arrival for job in trace if job.team == team]
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
        assert arrivals and max(gaps) > 600.0  # an idle gap of over 10 minutes
    assert all(0 < job.arrival < 4 * 3600.0 and job.duration > 0 for job in trace)


def test_the_pool_never_runs_more_than_its_capacity() -> None:
    teams = [TeamPolicy("a", 1, 3), TeamPolicy("b", 1, 3), TeamPolicy("c", 2, 6)]
    trace = bursty_trace([t.name for t in teams], 2 * 3600.0, seed=5)
    for scheduler in ("fair-share", "fair-share+preemption", "static-limits", "fifo",
                      "strict-priority"):
        result = simulate(12, teams, trace, scheduler, PERIOD)
        assert max(sum(counts) for counts in zip(*result.running.values(), strict=True)) <= 12
        assert len(result.finish) == len(trace)


def test_unknown_scheduler_and_bad_jobs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scheduler"):
        simulate(2, TWO, [], "round-robin")
    with pytest.raises(ValueError, match="unknown team 'z'"):
        simulate(2, TWO, [Job("x", "z", 0.0, 1.0)], "fifo")


def test_plot_allocation_writes_a_png(tmp_path) -> None:
    result = simulate(8, TWO, RECLAIM, "fair-share", PERIOD)
    path = plot_allocation(result, tmp_path / "plots" / "fair-share.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_preemption_reclaims_within_one_period_even_when_another_team_may_grow() -> None:
    teams = [TeamPolicy("y", 2.0, 2), TeamPolicy("x", 1.0, 2), TeamPolicy("c", 1.0, 2)]
    trace = _jobs("x", 8, 0.0, 1000.0) + _jobs("y", 4, 5.0, 1000.0) + _jobs("c", 2, 25.0, 1000.0)
    result = simulate(8, teams, trace, "fair-share+preemption", PERIOD)
    # At 30, x is preempted for c, but y (allocation 4, holding 2) starts in the freed slots.
    assert _held(result, "c", 30.0) == 2
