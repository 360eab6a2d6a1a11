"""The exceptions of IMAP ingest, and the one place third-party errors are translated.

::

    IngestError
    ├── AccountError            an account row or CLI argument is unusable (operator's fix)
    │   └── DuplicateAccount    the tenant already has an account with that address
    ├── StoreInterrupted        a commit was cut short by stopping (rolled back: fetched again)
    └── ImapError               talking to an IMAP server failed
        ├── ImapTemporaryError  reconnect with backoff: connection refused/lost, timeout,
        │   │                   BYE, an answer aioimaplib could not follow
        │   └── ImapTimeout     a command or a silent stretch exceeded its timeout
        └── ImapPermanentError  retrying now will not help: login rejected, folder missing,
                                server lacks IMAP4rev1/IDLE (retried only with the long backoff)

aioimaplib, asyncio and socket errors never leave :mod:`ingest.imap`: :func:`translate` maps
each to one of these (``tests/ingest/test_errors.py`` checks that the mapping is complete).
"""

from __future__ import annotations

import asyncio
import ssl

import aioimaplib


class IngestError(Exception):
    """Base of every ingest error."""


class AccountError(IngestError):
    """An account's settings are unusable (bad row, undecryptable password, bad argument)."""


class DuplicateAccount(AccountError):
    """The tenant already has an account with that address."""


class StoreInterrupted(IngestError):
    """The commit of a batch was cancelled (the component is stopping): nothing of it is
    stored, and the watcher fetches it again next time."""


class ImapError(IngestError):
    """An IMAP conversation failed; ``server_text`` is the server's own answer, if any."""

    def __init__(self, message: str, server_text: str | None = None):
        super().__init__(message)
        self.server_text = server_text


class ImapTemporaryError(ImapError):
    """Reconnect after a backoff; nothing was lost."""


class ImapTimeout(ImapTemporaryError):
    """A command (or a silent stretch of a long answer) took longer than its timeout."""


class ImapPermanentError(ImapError):
    """The server refused in a way a quick retry will not change (bad login, no folder)."""


# Library exception type -> our kind. Order matters: subclasses before their bases.
_MAPPING: tuple[tuple[type[BaseException], type[ImapError]], ...] = (
    (aioimaplib.CommandTimeout, ImapTimeout),
    (TimeoutError, ImapTimeout),
    (aioimaplib.IncompleteRead, ImapTemporaryError),
    (aioimaplib.Abort, ImapTemporaryError),
    (aioimaplib.Error, ImapTemporaryError),
    (aioimaplib.AioImapException, ImapTemporaryError),
    (ssl.SSLError, ImapTemporaryError),
    (ConnectionError, ImapTemporaryError),
    (OSError, ImapTemporaryError),
    (EOFError, ImapTemporaryError),
    (asyncio.IncompleteReadError, ImapTemporaryError),
)

LIBRARY_EXCEPTIONS: tuple[type[BaseException], ...] = tuple(t for t, _ in _MAPPING)


def translate(exc: BaseException, doing: str) -> ImapError:
    """Our error for a library/transport exception raised while ``doing`` something."""
    if isinstance(exc, ImapError):
        return exc
    for library_type, ours in _MAPPING:
        if isinstance(exc, library_type):
            detail = str(exc) or type(exc).__name__
            return ours(f"{doing}: {detail}")
    return ImapTemporaryError(f"{doing}: unexpected {type(exc).__name__}: {exc}")
