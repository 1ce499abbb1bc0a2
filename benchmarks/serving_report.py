"""The serving benchmark's tables and targets (``bench_serving`` measures, this judges).

A row is one server, request kind and concurrency: server key and name, and the medians
of its alternating runs (``serving_load.summarise``), or ``skipped`` with the reason it
could not run. The profile is ``profile_serving.measure``'s: CPU us per request by variant.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks.targets import Target

SERVICE = "batching-on"
P50_NOISE = 0.10  # batching on may be this much slower than off at p50, c1, and still pass
CPU_VARIANT = "service, batching on"  # profile_serving's variant that target (e) judges
COMPARED = ("1-row", "64-row")  # the kinds of the side-by-side table
SHADOW_P99 = 1.10  # issue 15: p99 with the shadow on at most this multiple of off


def find(rows: list[dict], key: str, kind: str, connections: int) -> dict | None:
    """The measured row of a server, kind and concurrency (None when not measured)."""
    return next((r for r in rows if (r["key"], r["kind"], r["connections"])
                 == (key, kind, connections) and "skipped" not in r), None)


def judge(name: str, needed: list, test: Callable[[], tuple[bool, str]]) -> Target:
    """The target, or not measured (None) when any of what it needs is missing."""
    return Target(name, None, "not measured") if None in needed else Target(name, *test())


def at_least(name: str, a: dict | None, b: dict | None, factor: float) -> Target:
    """a's req/s >= factor x b's (a share when factor < 1, else a multiple)."""
    def test() -> tuple[bool, str]:
        ratio = a["rps"] / b["rps"]
        shown = f"{ratio:.0%}" if factor < 1 else f"{ratio:.2f}x"
        return ratio >= factor, f"{shown} ({a['rps']:.0f} / {b['rps']:.0f} req/s)"

    return judge(name, [a, b], test)


def p99_within(subject: str, where: str, row: dict | None, limit_ms: float) -> Target:
    return judge(f"(c) {subject} p99 <= {limit_ms:g} ms, {where}", [row], lambda: (
        row["p99_ms"] <= limit_ms, f"p99 {row['p99_ms']:.3f} ms"))


def targets(rows: list[dict], profile: dict[str, Any] | None = None,
            http_server: str | None = "uvicorn") -> list[Target]:
    """Each target, passed or None when not measured (a subset of servers ran, or the
    service lacks a protocol); ratios are of medians of alternating runs."""
    svc = partial(find, rows, SERVICE)
    out = [at_least(f"(a) service >= 10x {label}, 1-row c16", svc("1-row", 16),
                    find(rows, key, "1-row", 16), 10)
           for key, label in (("kserve", "KServe ModelServer"), ("mlflow", "mlflow models serve"))]
    out += [at_least(f"(b) service >= {share:.0%} of the bare ASGI floor on its server "
                     f"({http_server}), {kind} c16", svc(kind, 16),
                     find(rows, f"asgi-{http_server}", kind, 16), share)
            for kind, share in (("1-row", 0.50), ("64-row", 0.35))]
    out += [p99_within("service", "1-row c1", svc("1-row", 1), 1.0),
            p99_within("predict-by-entity", "c1", svc("entity", 1), 1.5),
            at_least("(d) gRPC >= JSON REST, 1-row c16", svc("gRPC 1-row", 16), svc("1-row", 16),
                     1),
            at_least("(d) binary REST >= JSON REST, 64-row c16", svc("64-row binary", 16),
                     svc("64-row", 16), 1)]
    cpu = (profile or {}).get(CPU_VARIANT)
    out.append(judge(f"(e) in-process CPU per 1-row request <= 90 us ({CPU_VARIANT})", [cpu],
                     lambda: (cpu <= 90, f"{cpu:.0f} us")))
    shadow, plain = find(rows, "shadow", "1-row", 16), svc("1-row", 16)
    out.append(judge(f"(f) p99 with a challenger in shadow <= {SHADOW_P99:.2f}x without, 1-row "
                     "c16", [shadow, plain], lambda: (
                         shadow["p99_ms"] <= SHADOW_P99 * plain["p99_ms"],
                         f"{shadow['p99_ms'] / plain['p99_ms']:.2f}x ({shadow['p99_ms']:.3f} / "
                         f"{plain['p99_ms']:.3f} ms)")))
    out += earlier_targets(rows)
    errors = sum(r.get("errors", 0) for r in rows)
    out.append(Target("every run without errors", errors == 0, f"{errors} errors"))
    return out


def earlier_targets(rows: list[dict]) -> list[Target]:
    """The targets of the earlier issue that the new ones do not replace."""
    on, off = find(rows, SERVICE, "1-row", 16), find(rows, "batching-off", "1-row", 16)
    on1, off1 = find(rows, SERVICE, "1-row", 1), find(rows, "batching-off", "1-row", 1)
    return [
        at_least("(earlier) service >= 60% of the FastAPI floor, 1-row c16", on,
                 find(rows, "floor", "1-row", 16), 0.6),
        judge("(earlier) batching on/off throughput > 1, 1-row c16", [on, off], lambda: (
            on["rps"] > off["rps"], f"{on['rps'] / off['rps']:.2f}x")),
        judge(f"(earlier) batching on p50 <= off p50 (+{P50_NOISE:.0%} noise), 1-row c1",
              [on1, off1], lambda: (on1["p50_ms"] <= off1["p50_ms"] * (1 + P50_NOISE),
                                    f"on {on1['p50_ms']:.3f} ms, off {off1['p50_ms']:.3f} ms"))]


def report(meta: dict[str, Any], rows: list[dict]) -> None:
    """The table of every server's runs, then the service against each server, side by
    side."""
    print(f"\n## Serving benchmark: {meta['model']} version {meta['version']}, on loopback\n")
    print(f"{meta['cpus']} CPUs ({meta['platform']}, load average {meta['loadavg']} at the "
          f"start); {meta['wrk']} (REST), {meta['h2load']} (gRPC); servers and load "
          "generators share the same cores, and every server is up during every run. Each "
          f"row: medians of {meta['rounds']} alternating {meta['duration_s']:g} s runs"
          + (f" after a {meta['warmup_s']:g} s warm-up" if meta["warmup_s"] else "")
          + "; c1 = one connection, one thread; c16 = 16 connections, two threads; errors "
          "= non-2xx/3xx + socket errors + timeouts + gRPC calls without a reply, over "
          "all runs.\n")
    print("| server | request | conc | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['server']} | {r['kind']} | {r['connections']} | {r['skipped']} "
                  "| | | |")
        else:
            print(f"| {r['server']} | {r['kind']} | {r['connections']} | {r['rps']:.0f} | "
                  f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} |")
    print("\nNotes: TLS runs on kept-alive connections, so each connection's handshake is "
          "paid once per run, not per request. gRPC: one stream per connection; h2load "
          "counts HTTP statuses only, so a call whose reply is missing (gRPC errors "
          "answer trailers alone) counts as an error, and one call's grpc-status is "
          "checked before and after the load; an error that answered a reply of the "
          "checked length would go unseen.")
    side_by_side(rows)


def side_by_side(rows: list[dict]) -> None:
    """Our service's c16 req/s over each other server's, per kind (medians)."""
    mine = {kind: find(rows, SERVICE, kind, 16) for kind in COMPARED}
    names = dict.fromkeys(r["server"] for r in rows if r["key"] != SERVICE)
    keys = {r["server"]: r["key"] for r in rows}
    print("\nSide by side, c16 (medians of the same alternating runs): our service's "
          "req/s over each server's.\n")
    print("| server | " + " | ".join(f"{k} req/s | service ÷ it" for k in COMPARED) + " |")
    print("|---|" + "---:|---:|" * len(COMPARED))
    for name in names:
        cells = []
        for kind in COMPARED:
            theirs = find(rows, keys[name], kind, 16)
            ratio = (f"{mine[kind]['rps'] / theirs['rps']:.2f}x" if mine[kind] and theirs
                     else "")
            cells += [f"{theirs['rps']:.0f}" if theirs else "", ratio]
        if any(cells):
            print(f"| {name} | " + " | ".join(cells) + " |")
