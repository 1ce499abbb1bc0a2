"""Exclusive locks for work that must never interleave (a model's alias moves).

``file_lock`` serialises the processes of one machine; ``advisory_lock`` those of every
machine that reaches the same PostgreSQL (the production profile, where workers are pods).
Both are released by the operating system or the database when their holder dies, so a
crashed holder never leaves a lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_TIMEOUT_S = 600.0


class LockTimeout(TimeoutError):
    """The lock was not acquired in time; the message names it and its holder's kind."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An flock on ``path`` (created with its folder when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def advisory_key(name: str) -> int:
    """PostgreSQL's advisory locks take a signed 64-bit key: the name's hash."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(database_url: str, name: str,
                  timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """A session-level ``pg_advisory_lock`` on ``name``'s key, held on its own connection
    for the body; LockTimeout when another session holds it longer than ``timeout_s``."""
    import psycopg2

    connection = psycopg2.connect(database_url, connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = %s", (f"{int(timeout_s * 1000)}ms",))
            try:
                cursor.execute("SELECT pg_advisory_lock(%s)", (advisory_key(name),))
            except psycopg2.errors.LockNotAvailable:
                raise LockTimeout(f"advisory lock {name!r} still held by another session "
                                  f"after {timeout_s:.0f} s") from None
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(name),))
    finally:
        connection.close()
