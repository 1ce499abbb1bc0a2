"""`make bench-governance`'s gateway rows in quick mode, as `python -m
benchmarks.bench_governance --quick` runs them: a Prefect server with its auth string, the
gateway in front, triggers both ways (the audit rows on the local file beside them)."""

from __future__ import annotations

import pytest

from tests.benchmarks.test_quick_modes import markdown_rows, number, ran_quick


@pytest.mark.slow
def test_governance_quick_times_triggers_through_the_gateway_and_directly(run_benchmark,
                                                                         tmp_path):
    out = ran_quick(run_benchmark("bench_governance", "--quick", "--stores", "local file",
                                  "--out", str(tmp_path / "governance"), timeout=300))
    for statistic in ("median", "p95"):
        (row,) = markdown_rows(out, f"trigger latency, {statistic}")
        assert row[1] == "Prefect via gateway" and row[2] == "5 x 2 triggers, alternating"
        direct = number(row[3].removeprefix("direct ").removesuffix(" ms"))
        through = number(row[4].split(" ms", 1)[0])
        assert direct > 0 and through > 0
        ratio = number(row[4].split("(", 1)[1].split("x;", 1)[0])
        assert ratio == pytest.approx(through / direct, abs=0.01)  # the ms cells are rounded
    assert [row[0] for row in markdown_rows(out, "append, 1 process")] == ["append, 1 process"]
