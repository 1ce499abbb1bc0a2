"""Governance: the audit trail's append throughput and ``mlops audit verify``, on the local
file and on PostgreSQL, each beside the floor it stands on, measured in the same run.

- append, 1 process: one ``AuditLog`` appending ``--appends`` records one at a time (lock,
  read the head, seal, write and fsync, or insert and commit) after one untimed append
  (connecting), ``--rounds`` blocks with the stores taking turns; the median block's
  records/s. Floor: as many records' lines
  written and fsynced (file), or rows inserted and committed (PostgreSQL), with no lock
  and no chain.
- append, N processes: ``--processes`` forked processes (each connected first) appending
  at once to one store; the chain must then verify (a fork would break it).
- verify: a chain of ``--records`` records (sealed by the platform's code, loaded in bulk)
  checked by ``mlops audit verify`` run as a user runs it (a new process, interpreter
  start included); median of ``--verify-runs``. The file is in the page cache, as right
  after it was written. Floor: reading and sha256-ing the file; fetching every row.

- trigger through the gateway: ``--triggers`` runs started through the gateway and as
  many directly on the Prefect server behind it, alternating (``benchmarks.gateway_triggers``);
  median and p95 of each path. Floor: the direct path.

PostgreSQL is the machine's, as role ``mlops_bench`` with its own audit database
``mlops_bench_audit``, made afresh by ``ensure_audit_table`` for each measure. Targets:
>= 1,000 appends/s on each store; verify of 1,000,000 records <= 10 s on each; the
gateway's median and p95 trigger latency <= 1.10x direct. A row is one function in
``MEASURES``. ``--quick``: tiny sizes, targets not checked; ``--triggers 0`` leaves the
gateway out (the audit-only tests).

``python -m benchmarks.bench_governance`` (`make bench-governance`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

import psycopg2

from benchmarks import gateway_triggers
from benchmarks.targets import Target, conclude
from infra.production import ensure_postgres
from mlops.config import Settings
from mlops.governance.audit.log import audit_file, open_audit_log
from mlops.governance.audit.postgres_store import DATABASE, TABLE, ensure_audit_table
from mlops.governance.audit.records import GENESIS, Action, Sealed, draft, seal

REPO = Path(__file__).resolve().parents[1]
APPENDS_PER_S = 1_000.0
VERIFY_S = 10.0
MAX_RATIO = 1.10  # the gateway's trigger latency over the direct one
QUICK_SIZES = {"appends": 40, "rounds": 1, "records": 2_000, "processes": 2, "verify_runs": 1}
TRIGGERS = {False: 50, True: 5}  # per path, full and quick mode
FILE, POSTGRES = "local file", "PostgreSQL"
_COLUMNS = "seq, at, action, actor, team, subject, details, prev_hash, hash, mac"


class Row(NamedTuple):
    """One line of the table; ``target`` None: shown, not judged."""

    measure: str
    store: str
    size: str
    floor: str
    result: str
    target: Target | None


@dataclass
class Bench:
    """The run: its arguments, the settings of each store under test, the audit key."""

    args: argparse.Namespace
    stores: dict[str, Settings]
    key: str


def measure_append(bench: Bench) -> list[Row]:
    """One process, one record at a time; the stores take turns block by block."""
    n = bench.args.appends
    rates: dict[str, list[float]] = {store: [] for store in bench.stores}
    floors: dict[str, list[float]] = {store: [] for store in bench.stores}
    for store in bench.stores:
        fresh(bench.stores[store])
    for _ in range(bench.args.rounds):
        for store, settings in bench.stores.items():
            with open_audit_log(settings) as log:
                log.append("request.refused", "gateway")  # connected, not timed
                start = time.perf_counter()
                for i in range(n):
                    log.append("request.refused", "gateway", f"team{i % 4}", f"/api/{i}",
                               {"status": 403, "reason": "no runner role"})
                rates[store].append(n / (time.perf_counter() - start))
            floors[store].append(append_floor(settings, n))
    rows = []
    for store in bench.stores:
        rate = median(rates[store])
        rows.append(Row("append, 1 process", store, f"{bench.args.rounds} x {n:,} records",
                        f"{median(floors[store]):,.0f} /s", f"{rate:,.0f} records/s",
                        Target(f"audit append on the {store} >= {APPENDS_PER_S:,.0f} "
                               "records/s", rate >= APPENDS_PER_S, f"{rate:,.0f} records/s")))
    return rows


def measure_concurrent_append(bench: Bench) -> list[Row]:
    """Several processes append at once to one store; then the chain must verify."""
    processes, n = bench.args.processes, bench.args.appends
    context = multiprocessing.get_context("fork")
    rows = []
    for store, settings in bench.stores.items():
        fresh(settings)
        go, done = context.Event(), context.Queue()
        workers = [context.Process(target=_append_worker, args=(settings, n, go, done))
                   for _ in range(processes)]
        for worker in workers:
            worker.start()
        go.set()
        spans = [done.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
        rate = processes * n / (max(end for _, end in spans) - min(start for start, _ in spans))
        with open_audit_log(settings) as log:
            report = log.verify()
        intact = report.intact and report.count == processes * (n + 1)
        rows.append(Row(f"append, {processes} processes", store, f"{processes} x {n:,} records",
                        "-", f"{rate:,.0f} records/s in all, chain "
                        f"{'intact' if intact else 'BROKEN'}",
                        Target(f"one chain after {processes} processes appended to the {store}",
                               intact, f"{report.count:,} records, "
                               f"{report.broken or 'intact'}")))
    return rows


def _append_worker(settings: Settings, n: int, go: Any, done: Any) -> None:
    with open_audit_log(settings) as log:
        log.append("queue.limit_changed", "fairshare-controller")  # connected, not timed
        go.wait()
        start = time.time()
        for i in range(n):
            log.append("queue.limit_changed", "fairshare-controller", f"team{i % 4}",
                       f"gpu/team{i % 4}", {"limit": i % 7, "pid": os.getpid()})
        done.put((start, time.time()))


def measure_verify(bench: Bench) -> list[Row]:
    """`mlops audit verify` over a long chain, in a new process, as a user runs it."""
    records = bench.args.records
    for settings in bench.stores.values():
        fresh(settings)
    load_chain(bench.stores, bench.key.encode(), records)
    rows = []
    for store, settings in bench.stores.items():
        floor = read_floor(store, settings)
        seconds = median(_time_verify(bench, store, records)
                         for _ in range(bench.args.verify_runs))
        rows.append(Row("mlops audit verify", store, f"{records:,} records", f"{floor:.2f} s",
                        f"{seconds:.2f} s",
                        Target(f"mlops audit verify of {records:,} records on the {store} "
                               f"<= {VERIFY_S:.0f} s", seconds <= VERIFY_S, f"{seconds:.2f} s")))
    return rows


def _time_verify(bench: Bench, store: str, records: int) -> float:
    settings = bench.stores[store]
    env = {**os.environ, "MLOPS_PROFILE": settings.profile, "MLOPS_AUDIT_KEY": bench.key,
           "MLOPS_DATA_DIR": str(settings.data_dir), "MLOPS_PG_USER": settings.pg_user,
           "MLOPS_PG_DATABASE_PREFIX": settings.pg_database_prefix}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "audit", "verify"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or f"intact: {records} records" not in done.stdout:
        raise RuntimeError(f"verify on the {store} failed: {done.stdout}{done.stderr}")
    return seconds


def measure_gateway(bench: Bench) -> list[Row]:
    """Trigger latency through the gateway against directly, on one Prefect server."""
    triggers = bench.args.triggers
    if triggers == 0:
        return []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as folder:
        with gateway_triggers.stack(Path(folder)) as urls:
            deployment = gateway_triggers.deploy(urls["gateway"], urls["admin"])
            times, busy = gateway_triggers.measure(urls, deployment, triggers,
                                                   max(2, triggers // 5))
    rows = []
    for name, statistic in (("median", median), ("p95", gateway_triggers.p95)):
        direct, through = statistic(times["direct"]), statistic(times["gateway"])
        ratio = through / direct
        rows.append(Row(f"trigger latency, {name}", "Prefect via gateway",
                         f"{triggers} x 2 triggers, alternating",
                         f"direct {direct * 1000:.1f} ms",
                         f"{through * 1000:.1f} ms ({ratio:.3f}x; 503s retried: "
                         f"{busy['gateway']} vs {busy['direct']})",
                         Target(f"{name} trigger through the gateway <= {MAX_RATIO}x direct",
                                ratio <= MAX_RATIO, f"{ratio:.3f}x")))
    return rows


MEASURES: list[Callable[[Bench], list[Row]]] = [
    measure_append, measure_concurrent_append, measure_verify, measure_gateway]


def fresh(settings: Settings) -> None:
    """An empty audit store; on PostgreSQL the database afresh, made as production makes
    it, plus ``audit_floor``: the same table without trigger, lock or chain."""
    remove(settings)
    if settings.profile == "local":
        audit_file(settings).parent.mkdir(parents=True, exist_ok=True)
        return
    database = f"{settings.pg_database_prefix}_{DATABASE}"
    ensure_audit_table(settings)
    with _cursor(settings.database_url(database, admin=True)) as cursor:
        cursor.execute(f"CREATE TABLE audit_floor (LIKE {TABLE} INCLUDING ALL); "
                       f'GRANT SELECT, INSERT ON audit_floor TO "{settings.pg_user}"')


def remove(settings: Settings) -> None:
    """The store gone (a long chain is hundreds of MB)."""
    if settings.profile == "local":
        audit_file(settings).unlink(missing_ok=True)
        return
    with _cursor(settings.database_url("postgres", admin=True)) as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{settings.pg_database_prefix}_{DATABASE}" '
                       "WITH (FORCE)")


@contextmanager
def _cursor(url: str) -> Iterator[Any]:
    """An autocommitting cursor on a URL, closed after."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        yield conn.cursor()
    finally:
        conn.close()


def append_floor(settings: Settings, n: int) -> float:
    """Records/s of the bare write: a record's line written and fsynced, or its row
    inserted and committed (as the platform role), one at a time."""
    sealed = _chain(settings.audit_key.get_secret_value().encode(), 1)[0]
    if settings.profile == "local":
        path = settings.data_dir / "floor.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            start = time.perf_counter()
            for _ in range(n):
                os.write(fd, sealed.line + b"\n")
                os.fsync(fd)
            return n / (time.perf_counter() - start)
        finally:
            os.close(fd)
            path.unlink()
    with _cursor(settings.database_url(DATABASE)) as cursor:
        cursor.execute("SELECT coalesce(max(seq), 0) FROM audit_floor")
        first = cursor.fetchone()[0] + 1
        start = time.perf_counter()
        for seq in range(first, first + n):
            cursor.execute(f"INSERT INTO audit_floor ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, "
                           "%s, %s, %s, %s, %s)", (seq, *_columns(sealed)[1:]))
        return n / (time.perf_counter() - start)


def _chain(key: bytes, n: int, after: tuple[int, str] = (0, GENESIS)) -> list[Sealed]:
    """n records sealed by the platform's code, following ``after``."""
    drafts = [draft(action, f"user{i % 7}", f"team{i % 4}", f"subject-{i}",
                    {"deployment": f"train/team{i % 4}", "params_sha256": "ab" * 32})
              for i, action in enumerate(Action)]
    sealed, (seq, head) = [], after
    for i in range(n):
        record = seal(drafts[i % len(drafts)], seq, head, key)
        sealed.append(record)
        seq, head = record.record.seq, record.record.hash
    return sealed


def _columns(sealed: Sealed) -> tuple[object, ...]:
    record = sealed.record
    return (record.seq, sealed.at, record.action, record.actor, record.team, record.subject,
            sealed.details_json.decode(), record.prev, record.hash, record.mac)


def load_chain(stores: dict[str, Settings], key: bytes, records: int) -> None:
    """One chain of ``records`` written into every (empty) store in bulk: lines appended
    to the file, rows copied into the table by the platform role."""
    conn = (psycopg2.connect(stores[POSTGRES].database_url(DATABASE))
            if POSTGRES in stores else None)
    handle = audit_file(stores[FILE]).open("ab") if FILE in stores else None
    head = (0, GENESIS)
    try:
        for done in range(0, records, 50_000):
            batch = _chain(key, min(50_000, records - done), head)
            head = (batch[-1].record.seq, batch[-1].record.hash)
            if handle:
                handle.write(b"".join(sealed.line + b"\n" for sealed in batch))
            if conn:
                rows = io.StringIO()
                csv.writer(rows).writerows(_columns(sealed) for sealed in batch)
                rows.seek(0)
                with conn, conn.cursor() as cursor:
                    cursor.copy_expert(f"COPY {TABLE} ({_COLUMNS}) FROM STDIN (FORMAT csv)",
                                       rows)
    finally:
        for resource in (handle, conn):
            if resource:
                resource.close()


def read_floor(store: str, settings: Settings) -> float:
    """Seconds to read the whole store back, checking nothing."""
    start = time.perf_counter()
    if store == FILE:
        digest = hashlib.sha256()
        with audit_file(settings).open("rb", buffering=0) as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
        return time.perf_counter() - start
    conn = psycopg2.connect(settings.database_url(DATABASE))
    try:
        with conn, conn.cursor(name="floor") as cursor:
            cursor.itersize = 25_000
            cursor.execute(f"SELECT {_COLUMNS.replace('details', 'details::text')} FROM "
                           f"{TABLE} ORDER BY seq")
            for _ in cursor:
                pass
    finally:
        conn.close()
    return time.perf_counter() - start


def report(rows: list[Row]) -> None:
    print("| measure | store | size | floor (same run) | median | target |")
    print("|---|---|---|---:|---:|---|")
    for row in rows:
        target = row.target.name if row.target else "-"
        print(f"| {row.measure} | {row.store} | {row.size} | {row.floor} | {row.result} "
              f"| {target} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2_000, help="records per block")
    parser.add_argument("--rounds", type=int, default=5, help="append blocks per store")
    parser.add_argument("--processes", type=int, default=4, help="concurrent appenders")
    parser.add_argument("--records", type=int, default=1_000_000, help="chain to verify")
    parser.add_argument("--verify-runs", type=int, default=3, help="verify runs per store")
    parser.add_argument("--triggers", type=int, help="triggers per path through the "
                        f"gateway and directly, {TRIGGERS} by default (0: none)")
    parser.add_argument("--stores", default=f"{FILE},{POSTGRES}",
                        help=f"comma-separated, of {FILE!r} and {POSTGRES!r}")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "governance")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes ({QUICK_SIZES}); targets not checked")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK_SIZES)
    if args.triggers is None:
        args.triggers = TRIGGERS[args.quick]
    return args


def stores(args: argparse.Namespace, key: str) -> dict[str, Settings]:
    every = {FILE: Settings(profile="local", data_dir=args.out / "local", audit_key=key),
             POSTGRES: Settings(profile="production", data_dir=args.out / "production",
                                pg_user="mlops_bench", pg_database_prefix="mlops_bench",
                                audit_key=key)}
    chosen = {name: every[name] for name in args.stores.split(",")}  # KeyError: a typo
    if POSTGRES in chosen:
        ensure_postgres(chosen[POSTGRES])  # the role
    for settings in chosen.values():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key = secrets.token_hex(32)
    bench = Bench(args, stores(args, key), key)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")
    try:
        rows = [row for measure in MEASURES for row in measure(bench)]
    finally:
        for settings in bench.stores.values():
            remove(settings)
    report(rows)
    return conclude([row.target for row in rows if row.target], args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
