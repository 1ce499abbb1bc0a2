"""`make bench-platform`: its quick mode on a real Prefect server and real process workers,
and its full mode's verdict (exit status 1 after the whole table when a target is missed)
on measured values given in place of the measuring step."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.test_quick_modes import markdown_rows, number, ran_quick

SPLIT = re.compile(r"^([\d.]+) s \(worker pickup ([\d.]+) s, process start ([\d.]+) s\)$")


@pytest.mark.slow
def test_platform_quick_starts_runs_through_a_real_worker(run_benchmark):
    out = ran_quick(run_benchmark("bench_platform", "--quick", timeout=300))
    for name in ("median", "p95"):
        (row,) = markdown_rows(out, f"start latency, {name}")
        assert row[1:3] == ["1", "3, one at a time"]
        total, pending, process = map(float, SPLIT.match(row[4]).groups())
        assert 0 < pending < total and 0 < process < total  # each part of the start
        assert number(row[3].split()[2]) > 0  # the direct start, measured beside
    throughput = markdown_rows(out, "throughput")
    assert [(row[1], row[2]) for row in throughput] == [("1", "1 at once"), ("2", "2 at once")]
    for row in throughput:  # runs/min of the platform and of the direct starts beside it
        assert number(row[4].split()[0]) > 0 and number(row[3].split()[-1][:-4]) > 0
    (query,) = markdown_rows(out, "PREFECT_WORKER_QUERY_SECONDS")
    assert query[1:3] == ["2", "10"]  # the value chosen, Prefect's default


def test_platform_exits_1_when_a_start_is_too_slow(benchmark_module, monkeypatch, capsys):
    bench = benchmark_module("bench_platform")
    floor = [2.0] * 20  # direct starts: bounds 2 + 2 x 2 + 1 = 7 s (median), 7.6 s (p95)
    quick_starts = [bench.Start(1.0, 4.0 + i / 100) for i in range(20)]
    slow_tail = quick_starts[:18] + [bench.Start(3.0, 9.0)] * 2
    # (runs, platform s, direct s): 12, 20, 36 runs/min against 12, 18, 24 direct
    scaled = {1: (6, 30.0, 30.0), 2: (12, 36.0, 40.0), 4: (24, 40.0, 60.0)}
    monkeypatch.setattr(bench, "measure", lambda args: bench.Measured(slow_tail, floor, scaled))
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    assert out.index("| throughput | 4 | 24 at once | direct starts, 4 at a time: 24.0/min | "
                     "36.0 runs/min |") < out.index(
        "- FAIL start latency p95 <= 7.60 s (poll gap + 2 direct starts + 1 s): 9.00 s")
    assert "- PASS start latency median <= 7.00 s" in out
    assert ("- PASS throughput gain from concurrency 1 to 4 >= 0.8x the direct starts' gain: "
            "3.00x vs 2.00x (1.50)") in out
    assert out.rstrip().endswith("FAIL: 1 of 3 targets missed")

    flat = {**scaled, 4: (24, 100.0, 60.0)}  # 14.4 runs/min: 1.2x, the direct starts 2x
    monkeypatch.setattr(bench, "measure", lambda args: bench.Measured(quick_starts, floor, flat))
    assert bench.main([]) == 1
    assert "- FAIL throughput gain from concurrency 1 to 4 >= 0.8x the direct starts' gain: " \
        "1.20x vs 2.00x (0.60)" in capsys.readouterr().out
    monkeypatch.setattr(bench, "measure", lambda args: bench.Measured(quick_starts, floor,
                                                                      scaled))
    assert bench.main([]) == 0
    assert bench.main(["--quick"]) == 0  # quick judges nothing
    unscaled = bench.Measured(quick_starts, floor, {n: scaled[n] for n in (1, 2)})
    assert [t.passed for t in bench.check_targets(unscaled)] == [True, True, None]
