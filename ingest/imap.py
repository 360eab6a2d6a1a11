"""One IMAP session over aioimaplib: connect, log in, select, search, fetch, IDLE, close.

The boundary to aioimaplib: every library, socket and timeout error is translated by
:func:`ingest.errors.translate`, so callers see only :class:`~ingest.errors.ImapError`
kinds. It also covers aioimaplib's blind spots (see ``realpeers.md``):

* a connection that drops during IDLE leaves aioimaplib's IDLE task waiting forever, so the
  session registers a connection-lost callback and races every wait against it, and every
  command has a timeout (``ingest_command_timeout_s``);
* ``close`` cancels the tasks aioimaplib leaves behind, so an abandoned session leaks nothing;
* user names and folders are quoted (aioimaplib sends both unquoted);
* STARTTLS, which aioimaplib lists but does not implement, is done with ``loop.start_tls``;
* aioimaplib drops an untagged ``EXISTS`` that arrives with the answer to another command
  (Dovecot reports new mail with whatever command is running): the session counts them
  (:attr:`ImapSession.exists_seen`) so the watcher searches again instead of IDLEing past it;
* aioimaplib formats every received chunk into a debug log message even when debug logging
  is off, and recurses once per line (a read of ~1,000 lines overflows the stack): the
  session's protocol receives data without the formatting, a few KB of lines at a time
  (:mod:`gateway.compat.aioimaplib`, the one place that touches aioimaplib's internals).

Messages are fetched with ``BODY.PEEK[]``: the user's ``\\Seen`` flags are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import aioimaplib

from gateway.compat import aioimaplib as compat
from gateway.imapendpoint import Endpoint
from ingest.errors import (
    ImapPermanentError,
    ImapTemporaryError,
    ImapTimeout,
    translate,
)
from ingest.imapwire import FetchedItem, SelectInfo, parse_fetch, parse_list, parse_select

T = TypeVar("T")
META_ITEMS = "(UID RFC822.SIZE INTERNALDATE)"
BODY_ITEMS = "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[])"




def _server_text(response: Any) -> str:
    lines = [bytes(x) for x in getattr(response, "lines", []) if isinstance(x, bytes | bytearray)]
    return (b" ".join(lines[-2:]) if lines else b"").decode("utf-8", "replace")[:500]


class ImapSession:
    """A logged-in session. Create with :meth:`open`; always :meth:`close` it."""

    def __init__(self, client: aioimaplib.IMAP4, lost: asyncio.Event, timeout_s: float):
        self._client = client
        self._lost = lost
        self._timeout_s = timeout_s
        self.selected: SelectInfo | None = None
        self.exists_seen = 0
        compat.install_feed(client.protocol, self._on_untagged)

    def _on_untagged(self, line: bytes) -> None:
        if line.endswith(b" EXISTS"):
            self.exists_seen += 1

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, endpoint: Endpoint, *, connect_timeout_s: float, command_timeout_s: float
    ) -> ImapSession:
        """Connect, read the greeting, (STARTTLS,) log in. Raises an ImapError kind."""
        lost = asyncio.Event()

        def on_lost(_exc: Exception | None) -> None:
            lost.set()

        context = ssl.create_default_context() if endpoint.security != "none" else None
        try:
            client = aioimaplib.IMAP4(
                host=endpoint.host,
                port=endpoint.port,
                timeout=command_timeout_s,
                conn_lost_cb=on_lost,
                ssl_context=context if endpoint.security == "tls" else None,
            )
        except Exception as exc:
            raise translate(exc, "connect") from exc
        session = cls(client, lost, command_timeout_s)
        try:
            await session._guard(client.wait_hello_from_server(), "greeting", connect_timeout_s)
            if endpoint.security == "starttls":
                assert context is not None
                await session._starttls(endpoint.host, context)
            response = await session._guard(
                client.login(aioimaplib.quoted(endpoint.login_name), endpoint.password), "login"
            )
            if response.result != "OK":
                raise ImapPermanentError(
                    f"login as {endpoint.login_name} refused", server_text=_server_text(response)
                )
        except BaseException:
            session.close()
            raise
        return session

    async def _starttls(self, host: str, context: ssl.SSLContext) -> None:
        proto = self._client.protocol
        if "STARTTLS" not in proto.capabilities:
            raise ImapPermanentError("server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)
        response = await self._guard(proto.execute(command), "STARTTLS")
        if response.result != "OK":
            raise ImapPermanentError("STARTTLS refused", server_text=_server_text(response))
        loop = asyncio.get_running_loop()
        transport = await self._guard(
            loop.start_tls(proto.transport, proto, context, server_hostname=host), "TLS handshake"
        )
        proto.transport = transport
        await self._guard(proto.capability(), "CAPABILITY")

    def close(self) -> None:
        """Drop the connection now and cancel what aioimaplib left waiting."""
        compat.abort(self._client)

    async def logout(self, timeout_s: float = 2.0) -> None:
        """A polite LOGOUT (best effort, bounded), then :meth:`close`."""
        try:
            if not self._lost.is_set():
                await asyncio.wait_for(self._client.protocol.logout(), timeout_s)
        except Exception:  # noqa: BLE001, S110 - leaving anyway
            pass
        finally:
            self.close()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def capabilities(self) -> set[str]:
        return set(self._client.protocol.capabilities)

    # -- commands ----------------------------------------------------------------------------

    async def _guard(self, work: Awaitable[T], doing: str, timeout_s: float | None = None) -> T:
        """Run ``work`` against the timeout and the connection-lost event; translate errors."""
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost},
                timeout=timeout_s or self._timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:
            task.cancel()  # we are cancelled: leave nothing pending behind
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except Exception as exc:
                raise translate(exc, doing) from exc
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if self._lost.is_set():
            raise ImapTemporaryError(f"{doing}: connection lost")
        raise ImapTimeout(f"{doing}: no answer within {timeout_s or self._timeout_s:g} s")

    async def select(self, folder: str) -> SelectInfo:
        """SELECT (read-write, so IDLE reports new mail); the folder's UIDVALIDITY etc."""
        response = await self._guard(
            self._client.protocol.select(aioimaplib.quoted(folder)), "SELECT"
        )
        if response.result != "OK":
            raise ImapPermanentError(
                f"cannot select {folder!r}", server_text=_server_text(response)
            )
        info = parse_select(response.lines)
        if info is None:
            raise ImapTemporaryError(f"SELECT {folder!r}: no UIDVALIDITY in the answer")
        self.selected = info
        return info

    async def list_folders(self) -> list[str]:
        response = await self._guard(self._client.list('""', "*"), "LIST")
        if response.result != "OK":
            raise ImapPermanentError("LIST refused", server_text=_server_text(response))
        return parse_list(response.lines)

    async def uids_from(self, first_uid: int) -> list[int]:
        """UIDs >= ``first_uid`` in the selected folder, ascending (UID SEARCH)."""
        response = await self._guard(
            self._client.protocol.search("UID", f"{first_uid}:*", by_uid=True, charset=None),
            "UID SEARCH",
        )
        if response.result != "OK":
            raise ImapTemporaryError("UID SEARCH failed", server_text=_server_text(response))
        uids: list[int] = []
        for line in response.lines:
            # aioimaplib strips the "SEARCH" word of an untagged answer; accept both forms.
            words = bytes(line).split()
            if words and words[0].upper() == b"SEARCH":
                words = words[1:]
            if words and all(w.isdigit() for w in words):
                uids.extend(int(w) for w in words)
        return sorted(u for u in set(uids) if u >= first_uid)

    async def fetch(self, uid_set: str, items: str) -> list[FetchedItem]:
        """UID FETCH; the timeout is for silence, so a large message may take longer."""
        response = await self._guard(
            self._client.protocol.fetch(uid_set, items, by_uid=True, timeout=self._timeout_s),
            "UID FETCH",
            timeout_s=24 * 3600,  # the command's own inactivity timer bounds it
        )
        if response.result != "OK":
            raise ImapTemporaryError("UID FETCH failed", server_text=_server_text(response))
        return parse_fetch(response.lines)

    async def idle(self, renew_s: float) -> bool:
        """IDLE until the server reports new mail (True) or ``renew_s`` passes (False).

        Ends with DONE and waits for the tagged OK: that answer is also the liveness check.
        """
        client = self._client
        queue: asyncio.Queue[list[bytes]] = client.protocol.idle_queue
        while not queue.empty():  # pushes from before the last search are stale
            queue.get_nowait()
        idle_task = await self._guard(client.idle_start(timeout=renew_s + 3600), "IDLE")
        changed = False
        deadline = time.monotonic() + renew_s
        try:
            while not changed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    push = await self._guard(queue.get(), "IDLE wait", timeout_s=remaining)
                except ImapTimeout:
                    break
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                changed = any(
                    isinstance(line, bytes | bytearray)
                    and (line.endswith(b" EXISTS") or line.startswith(b"BYE"))
                    for line in push
                )
        finally:
            if not self._lost.is_set() and not idle_task.done():
                with contextlib.suppress(Exception):
                    client.idle_done()
        await self._guard(asyncio.shield(idle_task), "IDLE DONE")
        return changed
