"""`make bench-chaos`: its quick mode on the real stack (a worker and the inference service
killed while a run and wrk's load go on), and its full mode's exit status when a target is
missed, on measured values put in place of the measuring step."""

from __future__ import annotations

import re

import pytest

from benchmarks.targets import QUICK_NOTE

VERDICT_LINE = re.compile(r"^(- (PASS|FAIL) |(PASS|FAIL): )", re.MULTILINE)


@pytest.mark.slow
def test_quick_mode_survives_a_worker_and_a_service_kill(run_benchmark) -> None:
    result = run_benchmark("bench_chaos", "--quick", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    out = result.stdout
    assert QUICK_NOTE in out and not VERDICT_LINE.search(out), out
    value = {m[1]: int(m[2]) for m in re.finditer(r"^(runs [a-z, ]+?|model [a-z ]+?|requests "
                                                  r"[a-z ]+?) +(\d+)$", out, re.MULTILINE)}
    assert value["runs submitted"] == 2 and value["runs stuck"] == 0, out
    assert value["runs lost"] == 0 and value["runs completed"] >= 1, out
    assert value["model duplicates"] == 0 and value["model versions"] >= 1, out
    assert value["requests requests"] > 0 and value["requests failed outside"] == 0, out
    for kind in ("worker", "service"):  # each fault was detected and recovered
        row = next(line for line in out.splitlines() if line.startswith(kind))
        assert "never" not in row and " - " not in row, out


def measured(bench, **changes):
    """Values that meet every target, but for ``changes``."""
    runs = {"submitted": 9, "completed": 7, "failed, clear error": 2, "failed, no message": 0,
            "stuck": 0, "lost": 0}
    faults = [bench.FaultResult("worker", 0.5, 3.0, ""),
              bench.FaultResult("node", 80.0, 81.0, "run 1 and 2 processes"),
              bench.FaultResult("service", 0.4, 12.0, ""),
              bench.FaultResult("controller", 0.5, 6.0, "")]
    values = {"runs": runs, "versions": {"versions": 7, "distinct keys": 7, "duplicates": 0},
              "requests": {"requests": 900, "failed in down windows": 40, "failed outside": 0,
                           "slices": 100}, "faults": faults, "seconds": 600.0}
    return bench.Measured(**{**values, **changes})


@pytest.mark.parametrize("change, missed", [
    ({"runs": {"submitted": 9, "completed": 7, "failed, clear error": 1,
               "failed, no message": 0, "stuck": 1, "lost": 0}}, "0 runs stuck"),
    ({"versions": {"versions": 8, "distinct keys": 7, "duplicates": 1}},
     "0 duplicate model versions"),
    ({"requests": {"requests": 900, "failed in down windows": 40, "failed outside": 3,
                   "slices": 100}}, "0 requests failed outside"),
])
def test_full_mode_exits_1_after_the_whole_table_when_a_target_is_missed(
        benchmark_module, monkeypatch, capsys, change, missed) -> None:
    bench = benchmark_module("bench_chaos")
    monkeypatch.setattr(bench, "measure", lambda args: measured(bench, **change))
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    assert out.index("controller") < out.index(f"- FAIL {missed}")
    assert "FAIL: 1 of 10 targets missed" in out
    monkeypatch.setattr(bench, "measure", lambda args: measured(bench))
    assert bench.main([]) == 0
    assert "PASS: every target met (10)" in capsys.readouterr().out


def test_a_fault_never_recovered_or_too_slow_misses_its_target(benchmark_module) -> None:
    bench = benchmark_module("bench_chaos")
    never = measured(bench, faults=[bench.FaultResult("service", 0.4, None, "")])
    slow = measured(bench, faults=[bench.FaultResult("worker", 0.5, 400.0, "")])
    for values in (never, slow):
        assert [t.passed for t in bench.check_targets(values)][-1] is False


def test_requests_fail_outside_only_away_from_a_down_window(benchmark_module) -> None:
    bench = benchmark_module("bench_chaos")
    down = bench.Fault("service", 0.0, killed_at=100.0, recovered_s=10.0)
    slices = [bench.Slice(95.0, 97.0, 50, 0), bench.Slice(99.5, 101.5, 10, 8),
              bench.Slice(110.5, 112.5, 40, 2), bench.Slice(130.0, 132.0, 60, 1)]
    counts = bench.count_requests(slices, [down])
    assert counts == {"requests": 160, "failed in down windows": 10, "failed outside": 1,
                      "slices": 4}
