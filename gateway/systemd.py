"""systemd notification (sd_notify) without libsystemd.

When ``NOTIFY_SOCKET`` is set (``Type=notify`` units), mailgate reports READY=1 once every
component has started, STOPPING=1 when a shutdown begins, and WATCHDOG=1 periodically while
the event loop is alive. Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends datagrams to the systemd notification socket (abstract or path)."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        if address:
            # '@name' is an abstract socket: a leading NUL byte on the wire.
            self._address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, state: str) -> bool:
        """Send one state line (e.g. ``READY=1``); False when disabled or it failed."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    @staticmethod
    def watchdog_interval_s(default_s: float) -> float:
        """Half of WATCHDOG_USEC when systemd sets it (as sd_watchdog_enabled advises)."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        if usec.isdigit() and int(usec) > 0:
            return min(default_s, int(usec) / 2_000_000)
        return default_s
