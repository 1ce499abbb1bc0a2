"""The production profile's audit store: the table ``audit_records`` in the database
``<prefix>_audit``, which the platform's role may only read and append to.

``ensure_audit_table`` (run by the admin account when the production services are made
ready) creates the database and table, owned by the admin; the platform role gets CONNECT,
SELECT and INSERT and nothing else, and a trigger refuses UPDATE, DELETE and TRUNCATE
from anyone, the owner included, so only a superuser who disables it can change history
(and ``verify`` then finds the change).

An append is one transaction: an advisory transaction lock, the last record read, the
next one inserted and committed (two round trips); the primary key on ``seq`` would
refuse a fork even without the lock. Each process has its own connection (a forked child
opens its own), shared by its threads in turn; one that failed is dropped and reopened by
the next append.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
from psycopg2 import sql

from mlops.config import Settings
from mlops.governance.audit.file_store import Build
from mlops.governance.audit.read_ahead import read_chunks
from mlops.governance.audit.records import (
    GENESIS,
    AuditQuery,
    AuditRecord,
    AuditUnavailable,
    encode_body,
    parse_time,
)
from mlops.governance.audit.verify import Entry, Malformed

DATABASE = "audit"  # the platform database <prefix>_audit
TABLE = "audit_records"
LOCK_KEY = 0x6D6C6F7073617564  # the advisory lock of appends ("mlopsaud")
_AT = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
_COLUMNS = f"seq, {_AT}, action, actor, team, subject, details::text, prev_hash, hash, mac"
_HEAD = (f"BEGIN; SELECT pg_advisory_xact_lock({LOCK_KEY}); "
         f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1")
_INSERT = (f"INSERT INTO {TABLE} (seq, at, action, actor, team, subject, details, prev_hash, "
           "hash, mac) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s); COMMIT")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    at timestamptz NOT NULL,
    action text NOT NULL,
    actor text NOT NULL,
    team text,
    subject text,
    details json NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    mac text NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE} (at);
CREATE INDEX IF NOT EXISTS {TABLE}_team_at ON {TABLE} (team, at);
CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only();
CREATE OR REPLACE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_append_only();
REVOKE ALL ON {TABLE} FROM PUBLIC;
"""


def ensure_audit_table(settings: Settings) -> list[str]:
    """Create (when missing) the audit database and table through the admin account and
    grant the platform role only CONNECT, SELECT and INSERT; idempotent. Call it once the
    platform role exists. One line per thing done, for `make up`."""
    database = f"{settings.pg_database_prefix}_{DATABASE}"
    role = sql.Identifier(settings.pg_user)
    lines = []
    with _admin(settings, "postgres") as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            lines.append(f"postgres: created database {database} (owner "
                         f"{settings.pg_admin_user})")
        else:
            lines.append(f"postgres: database {database} exists")
        cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {0} FROM PUBLIC; "
                               "GRANT CONNECT ON DATABASE {0} TO {1}").format(
            sql.Identifier(database), role))
    with _admin(settings, database) as cursor:
        cursor.execute(_SCHEMA)
        cursor.execute(sql.SQL("REVOKE ALL ON {0} FROM {1}; GRANT SELECT, INSERT ON {0} TO {1}; "
                               "GRANT USAGE ON SCHEMA public TO {1}").format(
            sql.Identifier(TABLE), role))
    lines.append(f"postgres: table {TABLE} in {database}: {settings.pg_user} may SELECT and "
                 "INSERT only; UPDATE, DELETE and TRUNCATE refused by a trigger")
    return lines


class _admin:
    """A cursor of the admin account on one database, autocommitting, closed after."""

    def __init__(self, settings: Settings, database: str) -> None:
        self.url = settings.database_url(database, admin=True)
        self.where = settings.database_url(database, admin=True, redact=True)

    def __enter__(self) -> Any:
        try:
            self.conn = psycopg2.connect(self.url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            raise AuditUnavailable(f"PostgreSQL at {self.where} is unreachable: "
                                   f"{_reason(exc)}") from None
        self.conn.autocommit = True
        return self.conn.cursor()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


class PostgresAuditStore:
    """Records as rows of ``audit_records``, appended by the platform role."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.database_url(DATABASE)
        self.name = f"audit table {TABLE} at {settings.database_url(DATABASE, redact=True)}"
        self._conn: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def append(self, build: Build) -> AuditRecord:
        with self._lock:  # one connection: the threads of a process take turns
            for attempt in (1, 2):  # a connection the server dropped: once more, afresh
                conn = self._connection()
                try:
                    with conn.cursor() as cursor:
                        cursor.execute(_HEAD)
                        head = cursor.fetchone()
                except psycopg2.Error as exc:
                    self._drop()
                    if attempt == 2 or not isinstance(exc, psycopg2.OperationalError):
                        raise AuditUnavailable(f"{self.name}: cannot append: "
                                               f"{_reason(exc)}") from None
                    continue
                return self._insert(conn, build, head)
        raise AssertionError("unreachable")

    def _insert(self, conn: Any, build: Build, head: tuple[int, str] | None) -> AuditRecord:
        try:
            sealed = build(*(head or (0, GENESIS)))
            record = sealed.record
            with conn.cursor() as cursor:
                cursor.execute(_INSERT, (record.seq, sealed.at, record.action, record.actor,
                                         record.team, record.subject,
                                         sealed.details_json.decode(), record.prev,
                                         record.hash, record.mac))
            return record
        except psycopg2.Error as exc:
            self._drop()  # the transaction dies with the connection: nothing half-written
            raise AuditUnavailable(f"{self.name}: the record was not written: "
                                   f"{_reason(exc)}") from None
        except BaseException:
            self._drop()
            raise

    def entries(self) -> Iterator[Entry | Malformed]:
        """Every row in sequence order, as the bytes that were hashed (one snapshot)."""
        query = f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY seq"
        for rows in read_chunks(self._reader, self.name, query):
            for seq, at, action, actor, team, subject, details, prev, hash_, mac in rows:
                body = encode_body(seq, at, action, actor, team, subject, details.encode(),
                                   prev)
                yield (seq, prev, body, hash_, mac)

    def records(self, query: AuditQuery) -> Iterator[AuditRecord]:
        where, params = _where(query)
        select = sql.SQL("SELECT {} FROM {} {} ORDER BY seq").format(
            sql.SQL(_COLUMNS.replace("details::text", "details")), sql.Identifier(TABLE), where)
        for rows in read_chunks(self._reader, self.name, select, params):
            for seq, at, action, actor, team, subject, details, prev, hash_, mac in rows:
                yield AuditRecord(seq, parse_time(at), action, actor, team, subject, details,
                                  prev, hash_, mac)

    def close(self) -> None:
        self._drop()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn = self._connect(autocommit=True)  # transactions are explicit
            self._pid = os.getpid()
        return self._conn

    def _connect(self, autocommit: bool) -> Any:
        try:
            conn = psycopg2.connect(self._url, connect_timeout=5,
                                    application_name="mlops-audit")
        except psycopg2.Error as exc:
            raise AuditUnavailable(f"{self.name} is unreachable: {_reason(exc)}") from None
        conn.autocommit = autocommit
        return conn

    def _drop(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def _reader(self) -> Any:
        return self._connect(autocommit=False)


def _where(query: AuditQuery) -> tuple[sql.Composable, list[Any]]:
    tests, params = [], []
    for column, operator, value in (("team", "=", query.team), ("action", "=", query.action),
                                    ("at", ">=", query.since), ("at", "<", query.until)):
        if value is not None:
            tests.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(operator)))
            params.append(value)
    if not tests:
        return sql.SQL(""), params
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(tests), params


def _reason(exc: BaseException) -> str:
    """The first line of a driver error (libpq never puts the password in it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
