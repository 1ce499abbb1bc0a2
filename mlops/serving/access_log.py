"""Structured access logs: one JSON object per request, written to a stream in blocks.

Not through ``logging``: a record there (caller lookup, LogRecord, handler locks) costs
more per request than parsing the request. Lines are rendered by orjson on
the event loop and written when ``block_lines`` have gathered, every second (the app's
lifespan runs ``flush_every``), and at shutdown.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson


class AccessLog:
    """JSON lines to ``sink`` (stderr by default); ``AccessLog(None)`` logs nothing."""

    def __init__(self, sink: BinaryIO | None, block_lines: int = 256) -> None:
        self.sink, self.block_lines = sink, block_lines
        self.enabled = sink is not None
        self._lines: list[bytes] = []
        self._lock = threading.Lock()  # flush() may also run from a shutdown thread
        self._second, self._prefix = -1, ""

    def _timestamp(self) -> str:
        """Now in UTC as ISO 8601 with milliseconds (what ``datetime.isoformat`` writes),
        the date and time of day formatted once per second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"

    @classmethod
    def to_stderr(cls) -> AccessLog:
        return cls(sys.stderr.buffer)

    def record(self, fields: dict[str, Any]) -> None:
        fields["ts"] = self._timestamp()
        self._lines.append(orjson.dumps(fields))
        if len(self._lines) >= self.block_lines:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            if lines and self.sink is not None:
                self.sink.write(b"\n".join(lines) + b"\n")
                self.sink.flush()

    async def flush_every(self, seconds: float = 1.0) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.flush()
