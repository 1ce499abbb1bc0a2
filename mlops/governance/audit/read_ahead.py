"""Reading the audit table: one consistent snapshot, fetched in chunks by a background
thread while the caller works through the previous chunk.

Verifying a long chain is the server producing rows and this process hashing them; the
two overlap instead of taking turns. The snapshot (a read-only, repeatable-read
transaction on a server-side cursor) sees the table as it was when reading began, while
appends go on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2

from mlops.governance.audit.records import AuditUnavailable

CHUNK_ROWS = 25_000  # rows per round trip; two chunks at most wait in memory
_DONE = object()


def read_chunks(connect: Callable[[], Any], name: str, query: Any,
                params: list[Any] | None = None) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``query`` in chunks, fetched ahead; the connection ``connect`` returns
    is closed at the end, also when the caller stops early. AuditUnavailable (naming the
    store ``name``) when the server fails mid-way."""
    conn = connect()
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    chunks: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand_over(item: Any) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            with conn.cursor(name="audit_walk") as cursor:
                cursor.execute(query, params)
                while rows := cursor.fetchmany(CHUNK_ROWS):
                    if not hand_over(rows):
                        return
            hand_over(_DONE)
        except Exception as exc:  # handed to the reader, which raises it
            hand_over(exc)

    fetcher = threading.Thread(target=fetch, name="audit-prefetch", daemon=True)
    fetcher.start()
    try:
        while (item := chunks.get()) is not _DONE:
            if isinstance(item, psycopg2.Error):
                reason = (str(item).strip().splitlines() or [type(item).__name__])[0]
                raise AuditUnavailable(f"{name} cannot be read: {reason}") from None
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        fetcher.join()
        conn.close()
