"""aiosmtpd 1.4: the listener's DATA reader and connection set-up, where aiosmtpd's own are
too slow or unsafe for a flood of bounces.

:class:`FastSMTP` is aiosmtpd's ``SMTP`` with:

* :meth:`FastSMTP.read_data_chunk`: DATA read by chunks up to the next ``.\\r\\n`` instead of
  line by line in Python (aiosmtpd's own reader: ~3,740 / ~685 / ~86 msg/s for 500 B / 50 KB /
  500 KB messages here, realpeers.md); the chunks go to a pure, smuggling-safe parser
  (``bounces.smtp_policy.DataReader``), which decides where the message ends;
* :meth:`FastSMTP.__dir__` answered once per class: ``SMTP.__init__`` runs ``dir()`` and
  ``inspect.getmembers()`` over every new connection object to find its ``smtp_*`` and
  ``auth_*`` methods (~50 us of ~80 us of a connection's set-up);
* public names for the rest of what a subclass needs: resetting the idle timer, ending the
  DATA state, writing a raw reply line, and hearing about the idle timeout;
* :class:`FastHandler`, a base for the handler object that answers the same introspection
  once per class: ``SMTP.__init__`` also runs ``inspect.getmembers()`` and ``dir()`` over
  the handler, and ``inspect.signature()`` over its ``handle_EHLO``, for every connection
  (~60 us of a connection's set-up here).

Internals touched (checked by tests/gateway/test_compat.py): ``SMTP._reader``,
``SMTP._writer``, ``SMTP._reset_timeout``, ``SMTP._set_post_data_state``,
``SMTP._timeout_cb``, and ``SMTP.__init__``'s introspection through ``dir()`` (of the
protocol and of the handler) and ``inspect.signature()`` (of ``handle_EHLO``).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from aiosmtpd.smtp import SMTP

from gateway.compat import require

VERSION = require("aiosmtpd", ("1.4.",))


class FastHandler:
    """Base of an aiosmtpd handler whose introspection is answered once per class: ``dir()``
    lists only its ``handle_*`` and ``auth_*`` methods, and ``handle_EHLO`` carries its
    signature (what ``SMTP.__init__`` reads on every connection)."""

    _introspected: list[str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._introspected = None
        ehlo = cls.__dict__.get("handle_EHLO")
        if ehlo is not None:
            ehlo.__signature__ = inspect.signature(ehlo)

    def __dir__(self) -> list[str]:
        cls = type(self)
        if cls._introspected is None:
            names = object.__dir__(self)
            cls._introspected = [n for n in names if n.startswith(("handle_", "auth_"))]
        return list(cls._introspected)


class FastSMTP(SMTP):
    """aiosmtpd's ``SMTP`` with a chunked DATA reader and cached introspection."""

    _introspected: list[str] | None = None

    def __dir__(self) -> list[str]:
        cls = type(self)
        if cls._introspected is None:
            names = object.__dir__(self)
            cls._introspected = [n for n in names if n.startswith(("smtp_", "auth_"))]
        return list(cls._introspected)

    async def read_data_chunk(self) -> bytes | None:
        """The message bytes up to and including the next ``.\\r\\n`` (or what the
        stream's buffer holds when the line is longer); None when the peer went away."""
        try:
            return await self._reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:  # a long stretch without ".\r\n"
            return bytes(await self._reader.read(exc.consumed))
        except asyncio.IncompleteReadError:
            return None

    def reset_idle_timeout(self, timeout_s: float | None = None) -> None:
        """Restart the connection's timer (``timeout_s``: for this phase only)."""
        self._reset_timeout(timeout_s)

    def end_data(self) -> None:
        """Leave the DATA state (as aiosmtpd does after a message)."""
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    def write_line(self, line: str) -> None:
        """Write one reply line now (no await: on a connection being closed)."""
        self._writer.write(line.encode() + b"\r\n")

    def on_idle_timeout(self) -> None:
        """Called when the idle timer fires, before aiosmtpd closes the connection."""

    def _timeout_cb(self) -> None:
        self.on_idle_timeout()
        super()._timeout_cb()  # type: ignore[no-untyped-call]
