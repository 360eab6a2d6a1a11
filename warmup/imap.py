"""A small asyncio IMAP client for the warmup steps: log in, find a message by Message-ID,
move it to INBOX, set flags, log out.

Why not ingest's session: the steps need MOVE, STORE and SPECIAL-USE listing and nothing of
IDLE or fetching, and warmup meets ingest only through the database. The wire format lives
in :mod:`warmup.imapwire` (pure); this module is the socket. Every command has a timeout;
every network or protocol failure becomes :class:`~warmup.errors.ImapTemporary` (the step is
retried), a refused login :class:`~warmup.errors.ImapAuthFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType

from gateway.imapendpoint import Endpoint
from warmup.errors import ImapAuthFailed, ImapTemporary
from warmup.imapwire import (
    Folder,
    junk_folder,
    literal_size,
    parse_capabilities,
    parse_list,
    parse_search,
    quote,
)

MAX_LINE = 1 << 20


class ImapClient:
    """One session; use as ``async with ImapClient.connect(login, timeout_s) as imap``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout_s = timeout_s
        self._tag = 0
        self.capabilities: frozenset[str] = frozenset()
        self.selected: str | None = None

    @classmethod
    async def connect(cls, login: Endpoint, timeout_s: float = 30.0) -> ImapClient:
        context = ssl.create_default_context() if login.security != "none" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    login.host,
                    login.port,
                    ssl=context if login.security == "tls" else None,
                    limit=MAX_LINE,
                ),
                timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise ImapTemporary(f"connect to {login.host}:{login.port}: {exc}") from None
        client = cls(reader, writer, timeout_s)
        try:
            greeting = await client._line()
            if not greeting.startswith(b"* OK"):
                raise ImapTemporary(f"unexpected greeting {greeting[:80]!r}")
            if login.security == "starttls":
                await client.command("STARTTLS")
                assert context is not None
                await writer.start_tls(context, server_hostname=login.host)
            try:
                lines = await client.command(
                    f"LOGIN {quote(login.login_name)} {quote(login.password)}"
                )
            except ImapTemporary as exc:
                raise ImapAuthFailed(f"login as {login.login_name} refused: {exc}") from None
            caps = parse_capabilities(lines)
            if not caps:
                caps = parse_capabilities(await client.command("CAPABILITY"))
            client.capabilities = caps
        except BaseException:
            client.abort()
            raise
        return client

    async def __aenter__(self) -> ImapClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.logout()

    # -- wire -----------------------------------------------------------------------------

    async def _line(self) -> bytes:
        """One response line, literals joined in (``{n}`` then n bytes then the rest)."""
        try:
            line = await asyncio.wait_for(self._reader.readuntil(b"\r\n"), self._timeout_s)
            while (size := literal_size(line)) is not None:
                data = await asyncio.wait_for(self._reader.readexactly(size), self._timeout_s)
                rest = await asyncio.wait_for(self._reader.readuntil(b"\r\n"), self._timeout_s)
                head = line[: line.rindex(b"{")]
                line = head + b'"' + data.replace(b'"', b'\\"') + b'"' + rest
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise ImapTemporary("connection lost or timed out") from None
        return line.rstrip(b"\r\n")

    async def command(self, text: str) -> list[bytes]:
        """Send one command; its untagged lines, or ImapTemporary on NO/BAD."""
        self._tag += 1
        tag = f"w{self._tag}".encode()
        try:
            self._writer.write(tag + b" " + text.encode() + b"\r\n")
            await asyncio.wait_for(self._writer.drain(), self._timeout_s)
        except (OSError, TimeoutError):
            raise ImapTemporary("connection lost while sending") from None
        lines: list[bytes] = []
        while True:
            line = await self._line()
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1 :]
                if status[:2].upper() != b"OK":
                    verb = text.split(" ", 1)[0]
                    raise ImapTemporary(f"{verb}: {status.decode('utf-8', 'replace')[:200]}")
                lines.append(status)
                return lines
            lines.append(line)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()

    async def logout(self) -> None:
        with contextlib.suppress(ImapTemporary):
            await self.command("LOGOUT")
        self.abort()

    # -- what the steps use ---------------------------------------------------------------

    async def folders(self) -> list[Folder]:
        if "SPECIAL-USE" in self.capabilities or "LIST-EXTENDED" in self.capabilities:
            lines = await self.command('LIST "" "*" RETURN (SPECIAL-USE)')
        else:
            lines = await self.command('LIST "" "*"')
        return parse_list(lines)

    async def junk(self) -> str | None:
        """The Junk folder's name (SPECIAL-USE, else a common name), None if none."""
        return junk_folder(await self.folders())

    async def select(self, folder: str) -> None:
        if self.selected != folder:
            await self.command(f"SELECT {quote(folder)}")
            self.selected = folder

    async def find(self, folder: str, message_id: str) -> list[int]:
        """UIDs in ``folder`` whose Message-ID header contains ``message_id``."""
        await self.select(folder)
        return parse_search(await self.command(f"UID SEARCH HEADER Message-ID {quote(message_id)}"))

    async def move_to_inbox(self, uid: int) -> None:
        """Move one message of the selected folder to INBOX (MOVE, else COPY + EXPUNGE)."""
        if "MOVE" in self.capabilities:
            await self.command(f"UID MOVE {uid} INBOX")
            return
        await self.command(f"UID COPY {uid} INBOX")
        await self.command(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            await self.command(f"UID EXPUNGE {uid}")
        else:
            await self.command("EXPUNGE")

    async def add_flags(self, uid: int, flags: str) -> None:
        """``UID STORE uid +FLAGS.SILENT (flags)`` on the selected folder (idempotent)."""
        await self.command(f"UID STORE {uid} +FLAGS.SILENT ({flags})")
