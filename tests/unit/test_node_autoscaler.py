"""The node autoscaler under the fair-share simulator: tiny traces whose node timeline, waits
and GPU-hours are worked out by hand, then the static pool and the comparison."""

import math
from dataclasses import replace

import pytest

from benchmarks.bench_fairshare import team_terms
from benchmarks.fairshare_sim.nodes import (
    GONE,
    POLICIES,
    SETUPS,
    NodeParams,
    NodePool,
    compare_node_scaling,
    peak_demand,
)
from benchmarks.fairshare_sim.simulator import SCHEDULERS, Job, SimResult, bursty_trace, simulate
from mlops.fairshare.policy import TeamPolicy

ONE = [TeamPolicy("a", 1.0, 1)]
# Nodes take 120 s to boot and stop after 600 s without a run; ticks every 10 s.
ON_DEMAND = NodeParams(node_gpus=2, max_nodes=1, boot_s=120.0, idle_s=600.0, spot=False)


class FixedLifetimes(NodePool):
    """Spot nodes noticed after the given lifetimes, in launch order, instead of at random."""

    def __init__(self, params: NodeParams, lifetimes: list[float]) -> None:
        super().__init__(params)
        self.lifetimes = lifetimes

    def lifetime(self) -> float:
        return self.lifetimes.pop(0)


def _run(trace: list[Job], pool: NodePool, teams: list[TeamPolicy] = ONE) -> SimResult:
    capacity = pool.params.max_nodes * pool.params.node_gpus
    return simulate(capacity, teams, trace, "fair-share", 10.0, 60.0, nodes=pool)


def _did_all_work(result: SimResult) -> bool:
    return all(math.isclose(result.work_done[job.id], job.duration) for job in result.jobs)


def test_a_run_waits_for_the_boot_and_the_idle_node_is_stopped_after_the_idle_period() -> None:
    pool = NodePool(ON_DEMAND)
    result = _run([Job("a-0", "a", 0.0, 100.0)], pool)
    # Launched at 0, ready at 120 (the tick at 120 sees it), runs 120..220, idle until 820.
    assert result.first_start["a-0"] == 120.0 and result.finish["a-0"] == 220.0
    assert [(n.launched, n.stopped, n.state) for n in pool.nodes] == [(0.0, 820.0, GONE)]
    assert pool.gpu_seconds() == 2 * 820.0  # boot and idle tail included


def test_a_run_on_an_idle_node_starts_at_once_and_resets_its_idle_period() -> None:
    pool = NodePool(ON_DEMAND)
    result = _run([Job("a-0", "a", 0.0, 100.0), Job("a-1", "a", 500.0, 100.0)], pool)
    assert result.first_start["a-1"] == 500.0  # the node idle since 220 is still up
    assert [(n.launched, n.stopped) for n in pool.nodes] == [(0.0, 1200.0)]  # idle from 600
    assert pool.gpu_seconds() == 2 * 1200.0


def test_scale_out_launches_nodes_for_the_queued_runs_up_to_max_nodes() -> None:
    three = [Job(f"a-{k}", "a", 0.0, 100.0) for k in range(3)]
    pool = NodePool(NodeParams(node_gpus=2, max_nodes=4, spot=False))
    result = _run(three, pool, [TeamPolicy("a", 1.0, 8)])
    assert len(pool.nodes) == 2  # ceil(3 runs / 2 GPUs)
    assert sorted(result.first_start.values()) == [120.0] * 3
    ten = [Job(f"a-{k}", "a", 0.0, 100.0) for k in range(10)]
    capped = NodePool(NodeParams(node_gpus=2, max_nodes=2, spot=False))
    result = _run(ten, capped, [TeamPolicy("a", 1.0, 4)])
    assert len(capped.nodes) == 2 and max(result.finish.values()) == 120.0 + 3 * 100.0


def test_a_reclaim_loses_only_the_work_since_the_checkpoint_and_requeues_the_run() -> None:
    params = NodeParams(node_gpus=1, max_nodes=1, boot_s=120.0, idle_s=600.0,
                        spot_unavailable=0.0, notice_s=120.0)
    pool = FixedLifetimes(params, [400.0, 1e9])
    trace = [Job("a-0", "a", 0.0, 500.0), Job("a-1", "a", 450.0, 10.0)]
    result = _run(trace, pool)
    # Node 0: ready 120, a-0 runs from 120, notice at 400 (replacement launched then), gone
    # at 520: 400 s done, 360 s checkpointed, 40 s lost. a-0 goes back ahead of a-1 and
    # resumes on node 1 (ready at 520) for its last 140 s; a-1 runs 660..670.
    assert result.lost_s == {"a-0": 40.0, "a-1": 0.0} and pool.lost_s == 40.0
    assert pool.reclaims == 1 and pool.runs_stopped == 1
    assert result.first_start == {"a-0": 120.0, "a-1": 660.0}
    assert result.finish == {"a-0": 660.0, "a-1": 670.0}
    assert [(n.launched, n.stopped, n.spot) for n in pool.nodes] == [
        (0.0, 520.0, True), (400.0, 1270.0, True)]
    assert pool.gpu_seconds(spot=True) == pool.gpu_seconds() == 520.0 + 870.0
    assert result.preemptions == 0 and _did_all_work(result)
    assert result.times[-1] == 1270.0  # node 1's pending notice was cancelled at scale-in


def test_a_node_noticed_while_booting_takes_no_run_and_is_replaced() -> None:
    params = NodeParams(node_gpus=1, max_nodes=1, spot_unavailable=0.0)
    pool = FixedLifetimes(params, [60.0, 1e9])
    result = _run([Job("a-0", "a", 0.0, 100.0)], pool)
    assert [(n.launched, n.stopped) for n in pool.nodes] == [(0.0, 60.0), (60.0, 880.0)]
    assert result.first_start["a-0"] == 180.0 and pool.runs_stopped == 0
    assert pool.lost_s == 0.0 and pool.reclaims == 1


def test_on_demand_nodes_are_the_fallback_when_spot_is_unavailable() -> None:
    trace = [Job(f"a-{k}", "a", 100.0 * k, 1000.0) for k in range(8)]
    teams = [TeamPolicy("a", 1.0, 8)]
    unavailable = NodePool(NodeParams(max_nodes=4, spot_unavailable=1.0, spot_lifetime_s=1.0))
    result = _run(trace, unavailable, teams)
    assert len(unavailable.nodes) == 4 and not any(n.spot for n in unavailable.nodes)
    assert unavailable.gpu_seconds(spot=True) == 0.0 and unavailable.reclaims == 0
    assert _did_all_work(result)
    available = NodePool(NodeParams(max_nodes=4, spot_unavailable=0.0))
    _run(trace, available, teams)
    assert all(n.spot for n in available.nodes)
    assert available.gpu_seconds(spot=True) == available.gpu_seconds() > 0


def test_spare_gpus_are_kept_ready_until_nothing_arrived_for_the_memory() -> None:
    trace = [Job("a-0", "a", 0.0, 100.0), Job("a-1", "a", 2000.0, 100.0)]
    teams = [TeamPolicy("a", 1.0, 4)]
    params = NodeParams(node_gpus=2, max_nodes=2, spare_gpus=2, spare_memory_s=3000.0,
                        spot=False)
    pool = NodePool(params)
    result = _run(trace, pool, teams)
    # At 0: 1 queued + 2 spare GPUs, so two nodes. Node 1 stops at 720 (node 0's 2 free GPUs
    # are the spare); node 0 stays past its idle period: a run arrived within the memory.
    # a-1 takes node 0 at 2000, so a node is launched for the spare; it is kept until the
    # memory has passed since a-1 (5000), and stopped at its next idle check.
    assert [(n.launched, n.stopped) for n in pool.nodes] == [
        (0.0, 2700.0), (0.0, 720.0), (2000.0, 5120.0)]
    assert result.first_start["a-1"] == 2000.0  # no boot to wait for
    short = NodePool(replace(params, spare_memory_s=1000.0))
    result = _run(trace, short, teams)
    # Node 0 is idle from 220; at 820 the spare still holds it (the last arrival was at 0),
    # at 1420 it no longer does. a-1 then waits for a boot.
    assert [(n.launched, n.stopped) for n in short.nodes][:2] == [(0.0, 1420.0), (0.0, 720.0)]
    assert result.first_start["a-1"] == 2120.0


def test_the_spare_grows_with_the_square_root_of_the_runs_running_and_queued() -> None:
    four = [Job(f"a-{k}", "a", 0.0, 100.0) for k in range(4)]
    teams = [TeamPolicy("a", 1.0, 10)]
    for spare, nodes in ((0, 6), (1, 7)):  # 4 queued + spare + ceil(1.0 x sqrt(4))
        pool = NodePool(NodeParams(node_gpus=1, max_nodes=10, spare_gpus=spare,
                                   spare_sqrt=1.0, spot=False))
        _run(four, pool, teams)
        assert len(pool.nodes) == nodes


def test_initial_nodes_are_up_at_time_zero_and_scaled_in_when_idle() -> None:
    pool = NodePool(NodeParams(node_gpus=2, max_nodes=3, initial_nodes=2, spot=False))
    result = _run([Job("a-0", "a", 0.0, 100.0)], pool, [TeamPolicy("a", 1.0, 6)])
    assert result.first_start["a-0"] == 0.0  # no boot to wait for
    assert [(n.launched, n.stopped) for n in pool.nodes] == [(0.0, 700.0), (0.0, 600.0)]
    with pytest.raises(ValueError, match="initial_nodes"):
        NodeParams(max_nodes=2, initial_nodes=3)


def test_peak_demand_counts_the_most_runs_overlapping() -> None:
    def job(k: int, arrival: float, duration: float) -> Job:
        return Job(f"a-{k}", "a", arrival, duration)

    assert peak_demand([]) == 0
    # [0, 10), [5, 15), [10, 20): a finish frees its slot for an arrival at the same instant.
    assert peak_demand([job(0, 0.0, 10.0), job(1, 5.0, 10.0), job(2, 10.0, 10.0)]) == 2
    assert peak_demand([job(0, 0.0, 10.0), job(1, 5.0, 10.0), job(2, 9.0, 2.0)]) == 3


def test_a_pool_of_the_peak_demand_starts_every_run_on_arrival() -> None:
    teams = team_terms(4, 16)
    trace = bursty_trace([t.name for t in teams], 2 * 3600.0, seed=7)
    peak = peak_demand(trace)
    result = simulate(peak, teams, trace, "fifo")
    assert all(result.first_start[j.id] == j.arrival for j in trace)
    short = simulate(peak - 1, teams, trace, "fifo")
    assert any(short.first_start[j.id] > j.arrival for j in trace)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_static_node_pool_replays_the_plain_simulator_exactly(scheduler: str) -> None:
    teams = team_terms(4, 16)
    trace = bursty_trace([t.name for t in teams], 2 * 3600.0, seed=7)
    plain = simulate(16, teams, trace, scheduler)
    pool = NodePool(NodeParams(node_gpus=2, max_nodes=8, min_nodes=8))
    assert simulate(16, teams, trace, scheduler, nodes=pool) == plain
    assert pool.gpu_seconds() == pytest.approx(16 * plain.times[-1])


def test_the_comparison_sizes_the_static_pool_for_the_peak_and_reports_it() -> None:
    report = compare_node_scaling(seed=7, quick=True)
    trace = bursty_trace([t.name for t in team_terms(4, 16)], 2 * 3600.0, 7)
    peak = peak_demand(trace)
    assert report.peak_demand == peak
    assert report.capacity == math.ceil(peak / 2) * 2 == 2 * report.nodes.max_nodes
    assert f"peak demand {peak} runs at once" in report.headline()
    plain = simulate(report.capacity, team_terms(4, report.capacity), trace, "fair-share")
    assert report.row("static").gpu_hours_paid == pytest.approx(
        report.capacity * plain.times[-1] / 3600)
    assert compare_node_scaling(seed=7, quick=True, capacity=16).capacity == 16


def test_the_comparison_prices_gpu_hours_and_reports_each_setup() -> None:
    report = compare_node_scaling(seed=7, quick=True, capacity=16)
    assert tuple(row.setup for row in report.rows) == SETUPS
    static, on_demand, spot = report.rows
    plain = simulate(16, team_terms(4, 16), bursty_trace(
        [t.name for t in team_terms(4, 16)], 2 * 3600.0, 7), "fair-share")
    assert static.gpu_hours_paid == pytest.approx(16 * plain.times[-1] / 3600)
    assert static.cost == pytest.approx(4.0 * static.gpu_hours_paid)
    assert on_demand.spot_gpu_hours == 0.0 and on_demand.reclaims == 0
    assert spot.cost == pytest.approx(1.4 * spot.spot_gpu_hours
                                      + 4.0 * (spot.gpu_hours_paid - spot.spot_gpu_hours))
    assert spot.cost_on_demand_only == on_demand.cost > spot.cost
    assert 0 < spot.lost_gpu_hours < spot.busy_gpu_hours <= spot.gpu_hours_paid
    assert spot.reclaims > 0 and set(spot.wait_p99_s) == set(static.wait_p99_s)
    assert len(report.table()) == 2 + len(SETUPS)
    assert {name for name, _, _ in report.checks()} >= {"GPU-hours paid <= 0.7x static"}


def test_every_policy_runs_with_its_initial_nodes_capped_at_max_nodes() -> None:
    for params in POLICIES.values():
        report = compare_node_scaling(seed=7, quick=True, **params)
        assert report.nodes.initial_nodes in (0, report.nodes.max_nodes)
        assert report.row("autoscaled spot").gpu_hours_paid > 0
