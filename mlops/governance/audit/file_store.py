"""The local profile's audit store: one JSON line per record in
``<data_dir>/audit/audit.jsonl``, only ever appended to.

Many processes append (pipeline stages, the service, the controller), so every append
holds an exclusive ``flock`` on the file while it reads the last record, then writes the
next one with a single ``write`` followed by ``fsync``: the chain never forks, and a
record that ``append`` returned is on disk. The file is opened afresh for each append
(each with its own lock, so threads of one process take turns too), and a process that
forked, or a file that was moved away, never receives records meant for the current one.
Readers take the lock only to learn the size at which the file ends between two records,
then read without blocking writers.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from mlops.governance.audit.records import (
    GENESIS,
    AuditQuery,
    AuditRecord,
    AuditUnavailable,
    Sealed,
    parse_line,
)
from mlops.governance.audit.verify import Entry, Malformed, line_entry

CHUNK = 8 << 20  # bytes read at a time when walking the file
Build = Callable[[int, str], Sealed]  # (last seq, last hash) -> the next record, sealed


class AuditStore(Protocol):
    """Where records are kept; ``append`` calls ``build`` with the head under the store's
    lock, so concurrent writers never fork the chain."""

    name: str  # what the store is, for messages (never a password)

    def append(self, build: Build) -> AuditRecord: ...

    def entries(self) -> Iterator[Entry | Malformed]: ...

    def records(self, query: AuditQuery) -> Iterator[AuditRecord]: ...

    def close(self) -> None: ...


class FileAuditStore:
    """Records as JSON lines in one file, appended under ``flock``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"audit file {path}"

    def append(self, build: Build) -> AuditRecord:
        try:
            with self._locked(os.O_RDWR | os.O_APPEND | os.O_CREAT, fcntl.LOCK_EX) as fd:
                size = os.fstat(fd).st_size
                seq, head = _last_record(fd, size) if size else (0, GENESIS)
                sealed = build(seq, head)
                _write_all(fd, sealed.line + b"\n")
                os.fsync(fd)
                if not size:  # a new file: make its directory entry durable too
                    _fsync_dir(self.path.parent)
                return sealed.record
        except OSError as exc:
            raise AuditUnavailable(f"{self.name} cannot be written: "
                                   f"{exc.strerror or exc}") from None

    def entries(self) -> Iterator[Entry | Malformed]:
        for line in self._lines():
            yield line_entry(line)

    def records(self, query: AuditQuery) -> Iterator[AuditRecord]:
        for line in self._lines():
            record = parse_line(line)
            if query.matches(record):
                yield record

    def close(self) -> None:
        """Nothing stays open between calls."""

    def _lines(self) -> Iterator[bytes]:
        """Every complete line up to where the file ended when reading began."""
        try:
            with self._locked(os.O_RDONLY, fcntl.LOCK_SH) as fd:
                end = os.fstat(fd).st_size
            handle = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditUnavailable(f"{self.name} cannot be read: {exc.strerror or exc}") from None
        with handle:
            rest, left = b"", end
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield from lines
            if rest:
                yield rest  # a last line without its newline: verify names it

    @contextmanager
    def _locked(self, flags: int, lock: int) -> Iterator[int]:
        if flags & os.O_CREAT:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, flags | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, lock)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock


def _last_record(fd: int, size: int) -> tuple[int, str]:
    """The sequence number and hash of the file's last line, read backwards from the end;
    a file that does not end with a whole record is refused (fail closed)."""
    start, tail = size, b""
    step = 4096
    while True:
        start = max(0, start - step)
        tail = os.pread(fd, size - start - len(tail), start) + tail
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0 or start == 0:
            break
        step *= 2
    if not tail.endswith(b"\n"):
        raise AuditUnavailable(f"the audit file ends with a partial record (at byte {size}): "
                               "run `mlops audit verify` and repair it before recording more")
    entry = line_entry(tail[cut + 1:-1])
    if isinstance(entry, Malformed) or entry[0] is None:
        raise AuditUnavailable("the audit file's last record is unreadable: run "
                               "`mlops audit verify`")
    return entry[0], entry[3]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
