"""Each benchmark's full mode exits 1 when a target falls short, after its whole table.

Without running the slow benchmarks: each one's measuring step is replaced by a table of
measured values that misses a target (and one that meets them all), and its real
verdict and main run on it. The fair-share simulator is fast, so it runs for real with a
controller period that misses its targets.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

import pytest
import torch

from benchmarks.targets import QUICK_NOTE, Target, conclude, verdict_lines


def test_conclude_fails_a_missed_target_and_ignores_unmeasured_ones(capsys):
    met, missed, unmeasured = (Target("a", True, "1"), Target("b", False, "2"),
                               Target("c", None, "not measured"))
    assert conclude([met, unmeasured], quick=False) == 0
    assert conclude([met, missed], quick=False) == 1
    assert conclude([missed], quick=True) == 0
    out = capsys.readouterr().out
    assert "- FAIL b: 2\nFAIL: 1 of 2 targets missed" in out and "- n/a  c" in out
    assert out.rstrip().endswith(QUICK_NOTE) and "PASS: every target met (2)" in out
    assert verdict_lines([met]) == ["- PASS a: 1", "PASS: every target met (1)"]


def test_pipeline_exits_1_when_prefect_overhead_is_over_target(benchmark_module, monkeypatch,
                                                                capsys):
    bench = benchmark_module("bench_pipeline")
    fast = {1: (0.050, 0.008), 64: (0.050, 0.015), 1024: (0.140, 0.110)}  # ms: torch, ORT
    slow_flow = bench.Measured([10.0, 11.0, 12.0], [13.0, 13.5, 14.0], fast)
    monkeypatch.setattr(bench, "measure", lambda args: slow_flow)
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    assert out.index("(b) batch 1024") < out.index("- FAIL (a) Prefect flow <= 1.15x plain")
    assert "- PASS (b) ONNX Runtime >= 5x faster than torch eager, batch 1: 6.25x" in out
    monkeypatch.setattr(bench, "measure", lambda args: slow_flow._replace(prefect_s=[11.5]))
    assert bench.main([]) == 0
    assert bench.main(["--quick"]) == 0  # quick judges nothing
    slow_ort = slow_flow._replace(inference_ms={**fast, 64: (0.050, 0.040)})
    assert [t.passed for t in bench.check_targets(slow_ort)] == [False, True, False]


def run(key: str, kind: str, connections: int, **numbers: float) -> dict:
    defaults = {"rps": 1000.0, "p50_ms": 0.5, "p99_ms": 0.8, "errors": 0}
    return {"server": key, "key": key, "kind": kind, "connections": connections, "runs": 5,
            "requests": 1000, "seconds": 1.0, "mean_ms": 0.5, "max_ms": 2.0,
            **defaults, **numbers}


SERVING_RPS = {  # c16 req/s by server and kind that meet every serving target
    "batching-on": {"1-row": 20000, "64-row": 9000, "1-row binary": 21000,
                    "64-row binary": 12000, "gRPC 1-row": 22000, "gRPC 64-row": 12000},
    "batching-off": {"1-row": 15000, "64-row": 8000}, "shadow": {"1-row": 19000},
    "kserve": {"1-row": 1500, "64-row": 800},
    "mlflow": {"1-row": 1000, "64-row": 300}, "floor": {"1-row": 25000, "64-row": 24000},
    "asgi-uvicorn": {"1-row": 30000, "64-row": 25000},
    "asgi-granian": {"1-row": 32000, "64-row": 26000}}


def serving_runs(**entity_numbers: float) -> list[dict]:
    """Runs of every server that meet every serving target, but for the entity run's."""
    rows = [run(key, kind, c, rps=rps if c == 16 else rps / 8)
            for key, kinds in SERVING_RPS.items() for kind, rps in kinds.items() for c in (1, 16)]
    for key in ("batching-on", "batching-off"):
        rows += [run(key, "entity", c, **entity_numbers) for c in (1, 16)]
    return rows


def test_serving_exits_1_when_the_entity_route_is_too_slow(benchmark_module, monkeypatch,
                                                           capsys, tmp_path):
    bench = benchmark_module("bench_serving")
    meta = {"model": "wage_panel", "version": "1", "cpus": 2, "loadavg": "0", "platform": "x",
            "wrk": "wrk", "h2load": "h2load", "duration_s": 2, "warmup_s": 1, "rounds": 5,
            "quick": False, "service_http_server": "uvicorn"}
    profile = {"bare ASGI floor app": 4.0, "FastAPI floor app": 80.0,
               "service, batching on": 70.0, "profile": {}}

    def measured(rows: list[dict]) -> bench.Measured:
        return bench.Measured(meta, rows, profile)

    monkeypatch.setattr(bench, "measure", lambda args: measured(serving_runs(p99_ms=9.0)))
    assert bench.main(["--bench-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "- FAIL (c) predict-by-entity p99 <= 1.5 ms, c1: p99 9.000 ms" in out
    assert "- PASS (a) service >= 10x KServe ModelServer, 1-row c16: 13.33x" in out
    assert ("- PASS (b) service >= 35% of the bare ASGI floor on its server (uvicorn), 64-row "
            "c16: 36% (9000 / 25000 req/s)") in out
    assert out.index("| FastAPI floor app | 80 |") < out.index("FAIL: 1 of 14 targets missed")
    monkeypatch.setattr(bench, "measure", lambda args: measured(serving_runs()))
    assert bench.main(["--bench-dir", str(tmp_path)]) == 0
    errors = serving_runs() + [run("floor", "1-row", 16, errors=3)]
    assert [t.name for t in bench.serving_report.targets(errors, profile) if t.passed is False
            ] == ["every run without errors"]
    assert all(t.passed is None for t in bench.serving_report.targets([])[:-1])
    slow_grpc = [r for r in serving_runs() if r["kind"] != "gRPC 1-row"] + [
        run("batching-on", "gRPC 1-row", 16, rps=19000.0)]
    assert [t.name for t in bench.serving_report.targets(slow_grpc, profile)
            if t.passed is False] == ["(d) gRPC >= JSON REST, 1-row c16"]
    slow_shadow = [r for r in serving_runs() if r["key"] != "shadow"] + [
        run("shadow", "1-row", 16, rps=19000.0, p99_ms=0.9)]  # 0.9 / 0.8 ms: 1.12x
    assert [t.name for t in bench.serving_report.targets(slow_shadow, profile)
            if t.passed is False] == [
        "(f) p99 with a challenger in shadow <= 1.10x without, 1-row c16"]
    skipped = {"key": "tls", "server": "service, TLS", "kind": "1-row", "connections": 16,
               "skipped": "n/a (service has no --ssl-certfile)"}
    assert bench.serving_report.find([skipped], "tls", "1-row", 16) is None


def test_fairshare_exits_1_when_a_slow_controller_misses_its_targets(run_benchmark, tmp_path):
    result = run_benchmark("bench_fairshare", "--horizon-s", "7200", "--sweep", "1",
                           "--period-s", "300", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "- FAIL fair-share: utilisation >= 95%: measured" in result.stdout
    assert "- FAIL fair-share: utilisation >= 95% on seeds 8..8: 0/1 pass" in result.stdout
    assert result.stdout.index("| strict-priority |") < result.stdout.index("- FAIL")
    assert result.stdout.rstrip().splitlines()[-1].startswith("FAIL: ")


def test_fairshare_judges_each_scheduler_against_its_reclaim_bound(benchmark_module):
    bench = benchmark_module("bench_fairshare")
    metrics = bench.Metrics("fair-share+preemption", 0.99, 0.97, 0.98, 10, {}, [0.0, 12.5],
                            3, 0.1, 100.0)
    checks = bench.target_checks(metrics, median_s=240.0, period_s=10.0)
    assert [passed for _, passed, _ in checks] == [True, True, False]
    plain = dataclasses.replace(metrics, scheduler="fair-share")
    assert all(passed for _, passed, _ in bench.target_checks(plain, 240.0, 10.0))


def big_dask_case(**overrides: object) -> dict[str, object]:
    return {"rows": 100_000_000, "seconds": 100.0, "valid": True, "partitions": 200,
            "restarts": 0, "peak_gb": 2.5, **overrides}


def test_scale_exits_1_when_the_big_case_is_over_its_memory_budget(benchmark_module,
                                                                   monkeypatch, capsys):
    bench = benchmark_module("bench_scale")
    small = {**big_dask_case(), "rows": 5_000_000, "partitions": 10}
    over = [("pandas in memory (baseline)", {**small, "partitions": 1}), ("Dask", small),
            ("Dask", big_dask_case(peak_gb=3.4))]
    monkeypatch.setattr(bench, "run_cases", lambda args: over)
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    assert out.index("| Dask | 100,000,000 |") < out.index(
        "- FAIL peak RSS of the process tree <= 3.0 GB: 3.40 GB")
    monkeypatch.setattr(bench, "run_cases", lambda args: [*over[:2], ("Dask", big_dask_case())])
    assert bench.main([]) == 0
    args = argparse.Namespace(rows=100_000_000, partition_rows=500_000)
    lost = bench.check_targets(big_dask_case(rows=99_999_999, restarts=1, valid=False), args)
    assert [t.passed for t in lost] == [True, False, False, False]


def test_online_lookup_exits_1_when_redis_p99_is_over_2_ms(benchmark_module, monkeypatch,
                                                           capsys):
    bench = benchmark_module("bench_online_lookup")
    samples = {("SQLite (local)", 1): [0.3] * 100, ("Redis (production)", 1): [0.5] * 100,
               ("SQLite (local)", 100): [5.0] * 100, ("Redis (production)", 100): [7.0] * 100}
    slow = {**samples, ("Redis (production)", 1): [0.5] * 95 + [2.5] * 5}
    monkeypatch.setattr(bench, "collect", lambda args: slow)
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    assert out.index("| Redis (production) | 100 |") < out.index(
        "- FAIL Feast online lookup p99 <= 2.0 ms for one entity on Redis: 2.500 ms")
    monkeypatch.setattr(bench, "collect", lambda args: samples)
    assert bench.main([]) == 0


@pytest.mark.parametrize("autocast_rate, status", [(900.0, 0), (500.0, 1)])
def test_gpu_check_judges_its_targets_on_cuda_only(benchmark_module, capsys, autocast_rate,
                                                   status):
    bench = benchmark_module("gpu_check")
    rates = [("plain torch loop (baseline)", "fp32", 1000.0), ("platform loop", "fp32", 950.0),
             ("platform loop + autocast", "bf16", autocast_rate)]
    assert bench.verdict(rates, torch.device("cuda"), quick=False) == status
    assert bench.verdict(rates, torch.device("cuda"), quick=True) == 0
    assert bench.verdict(rates[:2], torch.device("cpu"), quick=False) == 0
    out = capsys.readouterr().out
    assert ("- FAIL platform loop + autocast, bf16 >= 0.8x the plain torch loop: 0.50x" in out
            ) == bool(status)
    assert "Targets (CUDA only): not checked on cpu" in out


def test_governance_exits_1_when_the_gateway_is_over_its_ratio(benchmark_module, monkeypatch,
                                                                capsys, tmp_path):
    """The audit rows measured for real on the local file (tiny sizes, full mode); the
    gateway's triggers replaced by timings 1.5x (then 1.05x) the direct ones."""
    bench = benchmark_module("bench_governance")
    triggers = bench.gateway_triggers
    monkeypatch.setattr(triggers, "stack", lambda folder: contextlib.nullcontext(
        {"gateway": "g", "admin": "a"}))
    monkeypatch.setattr(triggers, "deploy", lambda api, admin: "deployment")
    args = ["--stores", "local file", "--appends", "50", "--rounds", "1", "--processes", "2",
            "--records", "2000", "--verify-runs", "1", "--triggers", "5",
            "--out", str(tmp_path)]
    for ratio, status in ((1.5, 1), (1.05, 0)):
        times = {"direct": [0.040] * 5, "gateway": [0.040 * ratio] * 5}
        monkeypatch.setattr(triggers, "measure", lambda *a, t=times: (t, {"direct": 0,
                                                                           "gateway": 0}))
        assert bench.main(args) == status
        out = capsys.readouterr().out
        verdict = "FAIL" if status else "PASS"
        assert out.index("| trigger latency, p95 |") < out.index(
            f"- {verdict} median trigger through the gateway <= 1.1x direct: {ratio:.3f}x")
        assert "- PASS audit append on the local file" in out
