"""The production profile's audit trail on the machine's PostgreSQL, with a role and
database prefix of this module's own: the platform role may only read and append, a
trigger refuses changes even from the owner, a superuser who disables it is found out by
verify, many processes keep one chain, and a store that refuses fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from benchmarks.targets import QUICK_NOTE
from flows.cli import main
from infra.production import ensure_postgres
from mlops.config import Settings
from mlops.governance.audit.log import open_audit_log
from mlops.governance.audit.postgres_store import TABLE, ensure_audit_table
from mlops.governance.audit.records import AuditQuery, AuditUnavailable, draft, seal
from mlops.governance.audit.verify import BreakKind, line_entry, verify_chain
from tests.e2e.production_services import postgres_tenant
from tests.unit.test_audit_store import APPENDER

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
KEY = "e2e-audit-key-0123456789abcdef"


def production(tenant: dict[str, str], data_dir: Path) -> Settings:
    return Settings(profile="production", data_dir=data_dir, audit_key=KEY,
                    pg_user=tenant["MLOPS_PG_USER"], pg_password=tenant["MLOPS_PG_PASSWORD"],
                    pg_database_prefix=tenant["MLOPS_PG_DATABASE_PREFIX"])


def audit_database(settings: Settings) -> str:
    return f"{settings.pg_database_prefix}_audit"


def drop_audit_database(settings: Settings) -> None:
    with connect(settings, "postgres") as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(audit_database(settings))))


class connect:
    """An autocommitting cursor on the audit database (or ``database``), as the admin
    (superuser) or, with ``platform``, as the platform role."""

    def __init__(self, settings: Settings, database: str | None = None,
                 platform: bool = False) -> None:
        name = database or audit_database(settings)
        self.conn = psycopg2.connect(settings.database_url(name, admin=not platform)
                                     if not platform else settings.database_url("audit"))
        self.conn.autocommit = True

    def __enter__(self) -> Any:
        return self.conn.cursor()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The platform role (as `make up` makes it); its audit database is dropped before the
    tenant's clean-up drops the role."""
    with postgres_tenant() as tenant:
        settings = production(tenant, tmp_path_factory.mktemp("audit"))
        ensure_postgres(settings)
        try:
            yield tenant
        finally:
            drop_audit_database(settings)


@pytest.fixture
def settings(tenant: dict[str, str], tmp_path: Path) -> Settings:
    """A fresh audit database and table, made as production makes them."""
    settings = production(tenant, tmp_path)
    drop_audit_database(settings)
    ensure_audit_table(settings)
    return settings


def fill(settings: Settings, n: int = 5) -> None:
    with open_audit_log(settings) as log:
        for i in range(n):
            log.append("approval.granted" if i % 2 else "model.registered", f"user{i}",
                       "alpha" if i % 2 else "beta", f"wage_panel/v{i}", {"version": i})


def test_the_platform_role_may_only_read_and_append(settings: Settings) -> None:
    again = ensure_audit_table(settings)  # idempotent
    assert again[0].endswith("exists") and "SELECT and INSERT only" in again[1]
    fill(settings)
    with connect(settings) as cursor:
        cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (TABLE,))
        assert cursor.fetchone() == (settings.pg_admin_user,)
        cursor.execute("SELECT privilege_type FROM information_schema.role_table_grants "
                       "WHERE table_name = %s AND grantee = %s ORDER BY 1",
                       (TABLE, settings.pg_user))
        assert cursor.fetchall() == [("INSERT",), ("SELECT",)]
    refusals = ("UPDATE audit_records SET actor = 'eve' WHERE seq = 2",
                "DELETE FROM audit_records WHERE seq = 2", "TRUNCATE audit_records")
    with connect(settings, platform=True) as cursor:
        for statement in refusals:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege,
                               match="permission denied for table"):
                cursor.execute(statement)
    with connect(settings) as cursor:  # the owner, a superuser: the trigger refuses
        for statement in refusals:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege,
                               match="audit records are append-only"):
                cursor.execute(statement)
    with open_audit_log(settings) as log:
        report = log.verify()
    assert report.intact and report.count == 5


def _edit(cursor: Any) -> None:
    cursor.execute("ALTER TABLE audit_records DISABLE TRIGGER USER; "
                   "UPDATE audit_records SET actor = 'eve' WHERE seq = 3; "
                   "ALTER TABLE audit_records ENABLE TRIGGER USER")


def _delete(cursor: Any) -> None:
    cursor.execute("ALTER TABLE audit_records DISABLE TRIGGER USER; "
                   "DELETE FROM audit_records WHERE seq = 3; "
                   "ALTER TABLE audit_records ENABLE TRIGGER USER")


@pytest.mark.parametrize("tamper, position, seq, kind", [
    (_edit, 3, 3, BreakKind.EDITED), (_delete, 3, 4, BreakKind.SEQUENCE)])
def test_verify_finds_what_a_superuser_changed_behind_the_trigger(
        settings: Settings, tenant: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, tamper: Any, position: int, seq: int,
        kind: BreakKind) -> None:
    fill(settings)
    with connect(settings) as cursor:
        tamper(cursor)
    with open_audit_log(settings) as log:
        broken = log.verify().broken
    assert broken is not None and (broken.position, broken.seq, broken.kind) == (
        position, seq, kind)
    for key, value in {**tenant, "MLOPS_PROFILE": "production", "MLOPS_AUDIT_KEY": KEY,
                       "MLOPS_DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(key, value)
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"record {seq} (position {position})" in out and "audit_records" in out
    assert tenant["MLOPS_PG_PASSWORD"] not in out


def test_a_row_the_platform_role_forges_without_the_key_is_found(settings: Settings) -> None:
    fill(settings, 3)
    with open_audit_log(settings) as log:
        head = list(log.records())[-1]
    forged = seal(draft("approval.granted", "mallory", "alpha"), 3, head.hash, b"guessed")
    record = forged.record
    with connect(settings, platform=True) as cursor:
        cursor.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                       (record.seq, forged.at, record.action, record.actor, record.team,
                        record.subject, forged.details_json.decode(), record.prev,
                        record.hash, record.mac))
    with open_audit_log(settings) as log:
        broken = log.verify().broken
    assert broken is not None and (broken.seq, broken.kind) == (4, BreakKind.FORGED)


def test_four_processes_appending_at_once_keep_one_chain(settings: Settings,
                                                         tenant: dict[str, str]) -> None:
    go = settings.data_dir / "go"
    env = {**os.environ, **tenant, "PYTHONPATH": str(REPO), "MLOPS_PROFILE": "production",
           "MLOPS_AUDIT_KEY": KEY, "MLOPS_DATA_DIR": str(settings.data_dir)}
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(go), "200"], env=env,
                                cwd=REPO) for _ in range(4)]
    time.sleep(0.5)
    go.touch()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0, 0]
    with open_audit_log(settings) as log:
        report = log.verify()
        records = list(log.records())
    assert report.intact and report.count == 800, report.broken
    assert [r.seq for r in records] == list(range(1, 801))
    assert len({r.actor for r in records}) == 4


def test_threads_of_one_process_share_one_log_and_its_connection(settings: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with open_audit_log(settings) as log, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: log.append("request.refused", f"t{i % 4}", "alpha"),
                      range(200)))
        report = log.verify()
    assert report.intact and report.count == 200


def test_show_filters_in_sql_and_exports_lines_that_verify_alone(settings: Settings) -> None:
    fill(settings, 6)
    with open_audit_log(settings) as log:
        every = list(log.records())
        alpha = [r.seq for r in log.records(AuditQuery(team="alpha"))]
        granted = [r.seq for r in log.records(AuditQuery(team="alpha",
                                                         action="approval.granted"))]
        window = [r.seq for r in log.records(AuditQuery(since=every[1].at,
                                                        until=every[3].at))]
    assert alpha == granted == [2, 4, 6] and window == [2, 3]
    exported = [record.line() for record in every]  # what `show --json` writes
    report = verify_chain((line_entry(line) for line in exported), KEY.encode())
    assert report.intact and report.count == 6


def test_a_dropped_connection_is_reopened_and_a_refusing_store_fails_closed(
        settings: Settings) -> None:
    log = open_audit_log(settings)
    log.append("service.deployed", "ci", "alpha", "wage_panel", {"version": 1})
    with connect(settings) as cursor:  # the server ends the log's session
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                       "application_name = 'mlops-audit' AND datname = %s",
                       (audit_database(settings),))
        assert cursor.fetchone() == (True,)
    log.append("service.rolled_back", "ci", "alpha", "wage_panel", {"to": 0})
    with connect(settings) as cursor:
        cursor.execute(sql.SQL("REVOKE INSERT ON {} FROM {}").format(
            sql.Identifier(TABLE), sql.Identifier(settings.pg_user)))
    with pytest.raises(AuditUnavailable, match="the record was not written: permission "
                                               "denied") as caught:
        log.append("service.reloaded", "ops", "alpha")
    assert settings.pg_password.get_secret_value() not in str(caught.value)
    report = log.verify()
    assert report.intact and report.count == 2
    log.close()


def test_governance_benchmark_quick_with_postgres(tenant: dict[str, str],
                                                   tmp_path: Path) -> None:
    """`make bench-governance --quick`: both stores, every row, nothing judged."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_governance", "--quick",
                           "--triggers", "0",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert QUICK_NOTE in done.stdout and "PASS" not in done.stdout
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [(row[0], row[1]) for row in rows] == [
        ("append, 1 process", "local file"), ("append, 1 process", "PostgreSQL"),
        ("append, 2 processes", "local file"), ("append, 2 processes", "PostgreSQL"),
        ("mlops audit verify", "local file"), ("mlops audit verify", "PostgreSQL")]
    assert all("chain intact" in row[4] for row in rows[2:4])
