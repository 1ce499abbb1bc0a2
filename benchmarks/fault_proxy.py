"""A TCP proxy that can take a service away and give it back: the chaos benchmark puts it
between the platform and moto's S3 server, because moto keeps its objects in memory and so
cannot be stopped for an outage without losing them.

``cut()`` stops listening (new connections are refused, as by a host that is down) and
drops every open connection; ``restore()`` listens on the same port again. The proxy runs
an asyncio loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.servers import free_port

HOST = "127.0.0.1"
CHUNK = 64 * 1024


class FaultProxy:
    """Forwards ``HOST:port`` to ``HOST:target_port`` until cut."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target_port = free_port(), target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def start(self) -> None:
        self._thread.start()
        self.restore()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    async def _listen(self) -> None:
        if self._server is None:  # reuse_address: the port's old connections in TIME_WAIT
            self._server = await asyncio.start_server(self._pipe, HOST, self.port,
                                                      reuse_address=True)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()  # a reset, as when the far end goes away
        if server is not None:
            await server.wait_closed()

    async def _close(self) -> None:
        await self._cut()
        pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(self, client_reader: asyncio.StreamReader,
                    client_writer: asyncio.StreamWriter) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer, writer}
        self._open |= pair
        try:
            await asyncio.gather(_copy(client_reader, writer), _copy(reader, client_writer))
        finally:
            self._open -= pair
            for end in pair:
                end.transport.abort()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Bytes from one end to the other until the source ends (then half-close the sink)."""
    try:
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.transport.abort()


@contextmanager
def fault_proxy(target_port: int) -> Iterator[FaultProxy]:
    """A started proxy to ``target_port``, stopped at the end."""
    proxy = FaultProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
