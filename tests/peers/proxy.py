"""An asyncio TCP proxy on 127.0.0.1 for fault injection (cut IMAP/SMTP/Postgres connections).

``cut()`` aborts every current connection in both directions at once (RST-style, no FIN
handshake); ``pause()`` makes new connections get closed immediately (or held until
``resume()`` with ``pause(hold=True)``); ``retarget()`` sends later connections elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.peers.ports import LOOPBACK


class _Link:
    """One proxied connection: client <-> upstream."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.bytes_up = 0
        self.bytes_down = 0

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``(target_host, target_port)``."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.host = LOOPBACK
        self.port = port
        self.target_host = target_host
        self.target_port = target_port
        self.accepted = 0  # connections accepted and forwarded
        self.refused = 0  # connections closed because the proxy was paused
        self.cuts = 0  # connections aborted by cut()
        self.failed_upstream = 0  # connections whose upstream connect failed
        self._links: set[_Link] = set()
        self._held: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._changed = asyncio.Condition()

    # --------------------------------------------------------------- control
    @property
    def active(self) -> int:
        """Connections currently open through the proxy (forwarding)."""
        return len(self._links)

    @property
    def held(self) -> int:
        """Connections parked by ``pause(hold=True)``."""
        return len(self._held)

    async def start(self) -> TcpProxy:
        """Listen on 127.0.0.1 (a free port unless one was given); returns self."""
        self._server = await asyncio.start_server(self._on_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for the forwarding tasks."""
        if self._server is not None:
            self._server.close()
        self._resumed.set()
        self.cut()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> int:
        """Abort every current connection (both directions) now; return how many."""
        links = list(self._links)
        for link in [*links, *self._held]:
            link.abort()
        self.cuts += len(links)
        return len(links)

    def pause(self, *, hold: bool = False) -> None:
        """Refuse new connections (closed at once), or with ``hold=True`` park them."""
        self._paused = True
        if hold:
            self._resumed.clear()

    def resume(self) -> None:
        """Forward new connections again (held ones proceed)."""
        self._paused = False
        self._resumed.set()

    def retarget(self, host: str, port: int) -> None:
        """Send connections made from now on to another target."""
        self.target_host, self.target_port = host, port

    async def wait_active(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until at least ``count`` connections are open through the proxy."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.active >= count)

    async def wait_accepted(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until ``accepted`` reaches ``count`` (e.g. a client reconnected)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.accepted >= count)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ forwarding
    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        link = _Link(writer)
        try:
            if self._paused and self._resumed.is_set():
                self.refused += 1
                writer.transport.abort()
                return
            if not self._resumed.is_set():
                self._held.add(link)  # held connections can be cut too
                try:
                    await self._resumed.wait()
                finally:
                    self._held.discard(link)
                if writer.transport.is_closing() or self._server is None:
                    return
                if self._paused:
                    self.refused += 1
                    return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                self.failed_upstream += 1
                writer.transport.abort()
                return
            link.upstream = up_writer
            if writer.transport.is_closing():  # cut while connecting
                up_writer.transport.abort()
                return
            self._links.add(link)
            self.accepted += 1
            await self._notify()
            await asyncio.gather(
                self._pump(reader, up_writer, link, up=True),
                self._pump(up_reader, writer, link, up=False),
            )
        finally:
            link.abort()
            self._links.discard(link)
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                await self._notify()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *, up: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if up:
                    link.bytes_up += len(data)
                else:
                    link.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()  # half-close: pass the FIN on
        except (ConnectionError, OSError):
            link.abort()
