"""`make bench-fairshare`: the fair-share controller against what Prefect does without it.

One bursty trace (teams alternate busy bursts and idle gaps, lognormal run times, total
demand often above the pool) is replayed by ``benchmarks/fairshare_sim/simulator.py`` through five
schedulers in this one process: the controller (``plan_pool`` every --period-s, queue limits
in between) without and with preemption, and three baselines measured on the same trace:
static queue limits = quota (the platform before the controller), one FIFO queue, and
Prefect's strict queue priority. Metrics are ``benchmarks/fairshare_sim/scores.py``'s; one PNG per
scheduler shows each team's running slots over time.

Targets (fair-share schedulers only): utilisation >= 95% while demand >= capacity; mean
Jain index >= 0.95 over windows with >= 2 backlogged teams; the worst reclaim latency
(a team arriving below its quota, until it holds min(quota, demand)) <= the trace's median
run time without preemption, and <= one period with it. The last allows the period plus the
event granularity, which is 0 here: the simulator handles each arrival, finish and tick at
its own instant and starts runs at once, so a team arriving just after a tick is seen at
the next one and, its slots freed by preemption there, starts at that instant. A real
deployment adds the worker's poll interval and the victims' cancellation time. Last, the
same targets over the next --sweep seeds, so one lucky trace does not decide them.

Every target is judged after the tables, on the trace and on the sweep: exit status 1 when
one is missed, or when a simulated job did not do exactly its work. ``--quick``: a 2-hour
trace and one sweep seed; targets not checked.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.fairshare_sim.plots import plot_allocation
from benchmarks.fairshare_sim.scores import Metrics, summarise
from benchmarks.fairshare_sim.simulator import SCHEDULERS, Job, SimResult, bursty_trace, simulate
from benchmarks.targets import Target, conclude
from mlops.fairshare.policy import TeamPolicy

REPO = Path(__file__).resolve().parents[1]
TEAM_NAMES = ("vision", "nlp", "speech", "recsys", "ranking")
WEIGHTS = (1.0, 1.0, 2.0, 1.0, 1.0)
FAIR = ("fair-share", "fair-share+preemption")
UTILISATION_TARGET, JAIN_TARGET = 0.95, 0.95
QUICK_HORIZON_S, QUICK_SWEEP = 2 * 3600.0, 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--teams", type=int, default=4, choices=range(2, len(TEAM_NAMES) + 1))
    parser.add_argument("--horizon-s", type=float, default=6 * 3600.0,
                        help="arrivals stop here; the runs then drain")
    parser.add_argument("--period-s", type=float, default=10.0, help="controller period")
    parser.add_argument("--capacity", type=int, default=16, help="GPU slots in the pool")
    parser.add_argument("--checkpoint-s", type=float, default=60.0,
                        help="a preempted run resumes from its last checkpoint")
    parser.add_argument("--sweep", type=int, default=10,
                        help="also check the targets on this many further seeds (0: none)")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "fairshare")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_HORIZON_S / 3600:g} h "
                        f"trace, {QUICK_SWEEP} sweep seed; targets not checked")
    args = parser.parse_args(argv)
    if args.quick:
        args.horizon_s, args.sweep = QUICK_HORIZON_S, QUICK_SWEEP
    return args


def team_terms(count: int, capacity: int) -> list[TeamPolicy]:
    """Teams with weights 1, 1, 2, 1, ... and quotas in proportion (rounded down)."""
    weights = WEIGHTS[:count]
    return [TeamPolicy(name, weight, math.floor(capacity * weight / sum(weights)))
            for name, weight in zip(TEAM_NAMES, weights, strict=False)]


def run_schedulers(args: argparse.Namespace, teams: list[TeamPolicy], trace: list[Job],
                   schedulers: Sequence[str] = SCHEDULERS
                   ) -> list[tuple[SimResult, Metrics, float]]:
    """Each scheduler on the trace: its result, metrics and seconds of simulation."""
    rows = []
    for scheduler in schedulers:
        began = time.perf_counter()
        result = simulate(args.capacity, teams, trace, scheduler, args.period_s, args.checkpoint_s)
        rows.append((result, summarise(result), time.perf_counter() - began))
    return rows


def check_conservation(result: SimResult) -> list[str]:
    """Every job finished, having done exactly its work (preemption loses only redone work)."""
    return [f"{result.scheduler}: job {job.id} did {result.work_done[job.id]:.3f} of "
            f"{job.duration:.3f} s" for job in result.jobs
            if job.id not in result.finish
            or not math.isclose(result.work_done[job.id], job.duration, rel_tol=1e-9, abs_tol=1e-6)]


def _fmt(value: float, pattern: str) -> str:
    return "n/a" if math.isnan(value) else format(value, pattern)


def _reclaim_cells(latencies: list[float]) -> tuple[str, str]:
    waited = [v for v in latencies if v > 0]
    overall = (f"{statistics.median(latencies):.1f} / {max(latencies):.1f} ({len(latencies)})"
               if latencies else "n/a")
    contended = f"{statistics.median(waited):.1f} ({len(waited)})" if waited else "0 (0)"
    return overall, contended


def format_table(rows: list[tuple[SimResult, Metrics, float]]) -> list[str]:
    lines = ["| scheduler | util. (demand >= cap.) | Jain mean / median (windows) "
             "| p99 wait, worst team (s) | reclaim p50 / max (episodes) (s) "
             "| reclaim p50 of waits (n) (s) | preemptions | GPU h lost | sim (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result, metrics, seconds in rows:
        worst = max(metrics.wait_p99_s, key=lambda name: metrics.wait_p99_s[name])
        overall, contended = _reclaim_cells(metrics.reclaim_s)
        lines.append(
            f"| {result.scheduler} | {_fmt(100 * metrics.utilisation, '.1f')}% "
            f"| {_fmt(metrics.jain_mean, '.3f')} / {_fmt(metrics.jain_median, '.3f')} "
            f"({metrics.jain_windows}) | {metrics.wait_p99_s[worst]:.0f} ({worst}) "
            f"| {overall} | {contended} | {metrics.preemptions} "
            f"| {metrics.lost_gpu_hours:.3f} | {seconds:.2f} |")
    return lines


def format_waits(rows: list[tuple[SimResult, Metrics, float]], teams: list[TeamPolicy]
                 ) -> list[str]:
    lines = ["| scheduler | " + " | ".join(f"p99 wait {t.name} (s)" for t in teams) + " |",
             "|---" * (len(teams) + 1) + "|"]
    for result, metrics, _ in rows:
        lines.append(f"| {result.scheduler} | "
                     + " | ".join(f"{metrics.wait_p99_s[t.name]:.0f}" for t in teams) + " |")
    return lines


def target_checks(metrics: Metrics, median_s: float, period_s: float
                  ) -> list[tuple[str, bool, str]]:
    """(target, passed, measured) for one fair-share scheduler."""
    checks = [(f"utilisation >= {UTILISATION_TARGET:.0%}",
               metrics.utilisation >= UTILISATION_TARGET, f"{100 * metrics.utilisation:.1f}%"),
              (f"Jain mean >= {JAIN_TARGET}", metrics.jain_mean >= JAIN_TARGET,
               f"{metrics.jain_mean:.3f}")]
    # Every arrival counts: the worst reclaim, against one median run without preemption
    # and one period with it.
    value = max(metrics.reclaim_s, default=0.0)
    if metrics.scheduler == "fair-share":
        checks.append((f"reclaim max <= median run {median_s:.0f} s", value <= median_s,
                       f"{value:.1f} s"))
    else:
        checks.append((f"reclaim max <= period {period_s:g} s (+0 s granularity)",
                       value <= period_s + 1e-6, f"{value:.1f} s"))
    return checks


def trace_targets(rows: list[tuple[SimResult, Metrics, float]], median_s: float,
                  period_s: float) -> list[Target]:
    """The targets of each fair-share scheduler on the main trace."""
    return [Target(f"{metrics.scheduler}: {target}", passed, f"measured {measured}")
            for _, metrics, _ in rows if metrics.scheduler in FAIR
            for target, passed, measured in target_checks(metrics, median_s, period_s)]


def sweep_targets(args: argparse.Namespace, teams: list[TeamPolicy]) -> list[Target]:
    """The targets on --sweep further traces: one per scheduler and target, met when met
    on every seed; how many pass and the failing values."""
    tally: dict[tuple[str, str], list[tuple[bool, str]]] = {}
    for seed in range(args.seed + 1, args.seed + 1 + args.sweep):
        trace = bursty_trace([t.name for t in teams], args.horizon_s, seed)
        median_s = statistics.median(job.duration for job in trace)
        for _, metrics, _ in run_schedulers(args, teams, trace, FAIR):
            for target, passed, measured in target_checks(metrics, median_s, args.period_s):
                # The median run differs per trace: one key for the reclaim target.
                key = (metrics.scheduler, re.sub(r"median run \d+ s", "median run", target))
                tally.setdefault(key, []).append((passed, f"{measured} (seed {seed})"))
    seeds = f"seeds {args.seed + 1}..{args.seed + args.sweep}"
    targets = []
    for (scheduler, target), outcomes in tally.items():
        failed = [measured for passed, measured in outcomes if not passed]
        targets.append(Target(
            f"{scheduler}: {target} on {seeds}", not failed,
            f"{len(outcomes) - len(failed)}/{len(outcomes)} pass"
            + (f"; failing: {', '.join(failed)}" if failed else "")))
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    teams = team_terms(args.teams, args.capacity)
    trace = bursty_trace([t.name for t in teams], args.horizon_s, args.seed)
    median_s = statistics.median(job.duration for job in trace)
    offered = sum(job.duration for job in trace) / (args.capacity * args.horizon_s)
    print(f"pool of {args.capacity} GPUs; teams " + ", ".join(
        f"{t.name} (weight {t.weight:g}, quota {t.quota})" for t in teams))
    print(f"trace: seed {args.seed}, {len(trace)} runs over {args.horizon_s / 3600:g} h, median "
          f"run {median_s:.0f} s, offered load {offered:.0%} of the pool; controller period "
          f"{args.period_s:g} s, checkpoint every {args.checkpoint_s:g} s\n")
    rows = run_schedulers(args, teams, trace)
    problems = [problem for result, _, _ in rows for problem in check_conservation(result)]
    print("\n".join(format_table(rows)) + "\n")
    print("\n".join(format_waits(rows, teams)) + "\n")
    print("Plots:")
    for result, _, _ in rows:
        print(f"- {plot_allocation(result, args.out / f'{result.scheduler}.png')}")
    targets = trace_targets(rows, median_s, args.period_s)
    targets += sweep_targets(args, teams) if args.sweep else []
    seeds = f"seed {args.seed}" + (f", then seeds {args.seed + 1}..{args.seed + args.sweep}"
                                   if args.sweep else "")
    status = conclude(targets, args.quick, f"Targets (fair-share schedulers; {seeds}):")
    if problems:
        print("\nSIMULATION ERRORS:\n" + "\n".join(problems[:20]), file=sys.stderr)
    return 1 if problems else status


if __name__ == "__main__":
    sys.exit(main())
