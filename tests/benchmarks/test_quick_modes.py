"""Every benchmark's quick mode, run as `make bench*` runs it: a moved module, a renamed
function or a broken server fails here, not the next time someone benchmarks.

Quick mode runs the same code on tiny sizes, prints the same tables and judges no target,
so each test checks the exit status, the rows of the table and that nothing was judged.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.targets import QUICK_NOTE

REPO = Path(__file__).resolve().parents[2]

VERDICT_LINE = re.compile(r"^(- (PASS|FAIL) |(PASS|FAIL): )", re.MULTILINE)


def ran_quick(result: subprocess.CompletedProcess) -> str:
    """The output of a quick run that exited 0 and judged nothing."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert QUICK_NOTE in result.stdout
    assert not VERDICT_LINE.search(result.stdout), result.stdout
    return result.stdout


def markdown_rows(output: str, first_cell: str) -> list[list[str]]:
    """The cells of each markdown table row whose first cell is first_cell."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in output.splitlines() if line.startswith("| ")]
    return [row for row in rows if row[0] == first_cell]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%x"))


def test_fairshare_quick_replays_every_scheduler_and_plots_it(run_benchmark, tmp_path: Path):
    out = ran_quick(run_benchmark("bench_fairshare", "--quick", "--out", str(tmp_path)))
    assert "trace: seed 7," in out and "over 2 h" in out
    for scheduler in ("fair-share", "fair-share+preemption", "static-limits", "fifo",
                      "strict-priority"):
        table, waits = markdown_rows(out, scheduler)
        assert 0 < number(table[1].split("%")[0]) <= 100  # utilisation
        assert len(waits) == 5  # scheduler + one p99 wait per team
        assert (tmp_path / f"{scheduler}.png").stat().st_size > 0


def test_gpu_check_quick_times_the_plain_and_platform_loops(run_benchmark):
    out = ran_quick(run_benchmark("gpu_check", "--quick", timeout=120))
    assert re.search(r"^data +2048 rows x 32 features", out, re.MULTILINE)
    for loop in ("plain torch loop (baseline)", "platform loop "):
        line = next(ln for ln in out.splitlines() if ln.startswith(loop))
        assert number(line.split()[-2]) > 0  # samples/s


@pytest.mark.slow
def test_pipeline_quick_times_plain_and_prefect_runs_and_both_engines(run_benchmark):
    out = ran_quick(run_benchmark("bench_pipeline", "--quick"))
    assert "2 epochs, 1 run per variant" in out
    plain = re.search(r"^\(a\) plain Python, all stages +([\d.]+) s", out, re.MULTILINE)
    flow = re.search(r"^\(a\) Prefect flow, all stages +([\d.]+) s +([\d.]+)x plain", out,
                     re.MULTILINE)
    assert plain and flow and float(plain[1]) > 0 and float(flow[2]) > 0
    for size in (1, 64, 1024):
        speedup = re.search(rf"^\(b\) batch {size}: torch eager / ONNX Runtime .* ORT "
                            r"([\d.]+)x faster", out, re.MULTILINE)
        assert speedup and float(speedup[1]) > 0


SERVING_KINDS = {  # the request kinds of each server, at c1 and c16
    "service, batching on": ("1-row", "64-row", "1-row binary", "64-row binary", "entity",
                             "gRPC 1-row", "gRPC 64-row"),
    "service, batching off": ("1-row", "64-row", "entity"),
    "KServe ModelServer": ("1-row", "64-row", "gRPC 1-row", "gRPC 64-row"),
    "mlflow models serve": ("1-row", "64-row"), "FastAPI floor": ("1-row", "64-row"),
    "bare ASGI floor, uvicorn": ("1-row", "64-row"),
    "bare ASGI floor, granian": ("1-row", "64-row"),
    "bare gRPC floor, grpc.aio": ("gRPC 1-row",),
}


@pytest.mark.slow
def test_serving_quick_loads_every_server_side_by_side(run_benchmark, tmp_path: Path):
    out = ran_quick(run_benchmark("bench_serving", "--quick", "--bench-dir", str(tmp_path),
                                  timeout=600))
    table = {server: [row for row in markdown_rows(out, server) if len(row) == 7]
             for server in [*SERVING_KINDS, "service, TLS", "service, shadow on"]}
    expected = {server: sorted((kind, conc) for kind in kinds for conc in ("1", "16"))
                for server, kinds in SERVING_KINDS.items()}
    one_row_c16 = [("1-row", "16")]
    for server, kinds in {**expected, "service, TLS": one_row_c16,
                          "service, shadow on": one_row_c16}.items():
        assert sorted((kind, conc) for _, kind, conc, *_ in table[server]) == kinds, out
    runs = [row for rows in table.values() for row in rows if not row[3].startswith("n/a")]
    assert all(number(row[3]) > 0 and row[6] == "0" for row in runs)  # req/s, errors
    not_offered = [row for rows in table.values() for row in rows if row[3].startswith("n/a")]
    assert {row[3] for row in not_offered} <= {"n/a (service has no --grpc-port)",
                                              "n/a (service has no --ssl-certfile)"}
    for server in ("KServe ModelServer", "mlflow models serve", "bare ASGI floor, uvicorn"):
        (side,) = [row for row in markdown_rows(out, server) if len(row) == 5]
        assert number(side[1]) > 0 and number(side[2]) > 0  # side by side: req/s, ratio
    for app in ("bare ASGI floor app", "FastAPI floor app", "service, batching on",
                "service, batching on, HTTP bytes in and out",
                "bare ASGI floor, HTTP bytes in and out"):
        (profiled,) = markdown_rows(out, app)[-1:]  # where the time goes
        assert number(profiled[1]) > 0
    saved = json.loads((tmp_path / "bench-serving.json").read_text())
    assert saved["meta"]["quick"] and saved["meta"]["service_http_server"] == "uvicorn"
    assert len([r for r in saved["runs"] if "skipped" not in r]) == len(runs)
    assert saved["targets"]


@pytest.mark.slow
def test_observability_quick_scores_the_detectors_the_autoscaler_and_the_scrape_cost(
        run_benchmark, tmp_path: Path):
    out = ran_quick(run_benchmark("bench_observability", "--quick", "--bench-dir",
                                  str(tmp_path), timeout=900))
    kinds = ["idle-gpus-with-work-queued", "throughput-collapse", "memory-growing-towards-limit",
             "latency-spike", "run-stalled"]
    for kind in kinds:
        (row,) = markdown_rows(out, kind)
        assert 0 <= number(row[1]) <= 1 and 0 <= number(row[2]) <= 1  # precision, recall
    for setup in ("static", "autoscaled on-demand", "autoscaled spot"):
        (row,) = markdown_rows(out, setup)
        assert number(row[1].split()[0]) > 0  # GPU-hours paid
    assert len(markdown_rows(out, "spare buffer")) == 1  # every policy on the one seed
    for case in ("not scraped (baseline)", "scraped every 1 s"):
        (row,) = markdown_rows(out, case)
        assert number(row[1]) > 0


def test_every_make_bench_target_has_a_quick_mode_test():
    """Each module a `make bench*` target runs is run with --quick by a test here."""
    makefile = (REPO / "Makefile").read_text()
    recipes = re.findall(r"^(bench[\w-]*):.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    modules = {module for _, recipe in recipes
               for module in re.findall(r"-m benchmarks\.(\w+)", recipe)}
    assert {"bench_pipeline", "bench_serving", "bench_chaos"} <= modules, recipes
    tests = "".join(path.read_text() for path in (REPO / "tests" / "benchmarks").glob("test_*.py"))
    quick = set(re.findall(r'run_benchmark\(\s*"(\w+)",\s*"--quick"', tests))
    assert modules - quick == set()


@pytest.mark.slow
def test_scale_quick_validates_in_memory_and_on_dask(run_benchmark, tmp_path: Path):
    out = ran_quick(run_benchmark("bench_scale", "--quick", "--data-dir", str(tmp_path)))
    cases = markdown_rows(out, "pandas in memory (baseline)") + markdown_rows(out, "Dask")
    assert [(row[1], row[2], row[-1]) for row in cases] == [
        ("2,000", "1", "True"), ("2,000", "2", "True"), ("4,000", "4", "True")]
    assert all(number(row[5]) > 0 for row in cases)  # peak RSS


@pytest.mark.slow
def test_batch_quick_scores_every_row_beside_the_baseline(run_benchmark, tmp_path: Path):
    out = ran_quick(run_benchmark("bench_batch", "--quick", "--data-dir", str(tmp_path)))
    cases = markdown_rows(out, "pandas + ONNX Runtime, one process (baseline)") + \
        markdown_rows(out, "Dask scorer")
    assert [row[1] for row in cases] == ["3,000", "3,000", "6,000"]
    assert all(number(row[3]) > 0 and number(row[4]) > 0 for row in cases)  # rows/s, RSS


@pytest.mark.slow
def test_online_lookup_quick_reads_redis_and_sqlite(run_benchmark, tmp_path: Path):
    out = ran_quick(run_benchmark("bench_online_lookup", "--quick", "--out", str(tmp_path)))
    rows = markdown_rows(out, "SQLite (local)") + markdown_rows(out, "Redis (production)")
    assert sorted((row[0], row[1], row[2]) for row in rows) == [
        ("Redis (production)", "1", "20"), ("Redis (production)", "100", "20"),
        ("SQLite (local)", "1", "20"), ("SQLite (local)", "100", "20")]
    assert all(0 < number(row[3]) <= number(row[4]) for row in rows)  # p50 <= p99
