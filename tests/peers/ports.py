"""Free loopback ports and bounded waiting for a server's greeting (synchronous helpers)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def read_greeting(host: str, port: int, timeout_s: float = 2.0, source: str | None = None) -> bytes:
    """Connect once and return the first line the server sends (b"" if none)."""
    src = (source, 0) if source else None
    with socket.create_connection((host, port), timeout=timeout_s, source_address=src) as sock:
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def wait_for_greeting(
    host: str,
    port: int,
    prefix: bytes,
    timeout_s: float = 10.0,
    alive: Callable[[], bool] | None = None,
) -> bytes:
    """Poll until a fresh connection to ``host:port`` is greeted with a line starting ``prefix``.

    Returns the greeting line. Raises ``TimeoutError`` after ``timeout_s`` or ``RuntimeError`` as
    soon as ``alive()`` (if given) reports that the server process has died.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    last: bytes | str = "no connection yet"
    while True:
        if alive is not None and not alive():
            raise RuntimeError(f"server on {host}:{port} exited before greeting ({last!r})")
        try:
            line = read_greeting(host, port, timeout_s=min(2.0, timeout_s))
            if line.startswith(prefix):
                return line
            last = line
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no {prefix!r} greeting from {host}:{port} within {timeout_s} s (last: {last!r})"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.02
) -> None:
    """Bounded polling: return once ``predicate()`` is true, else raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def wait_port_closed(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Bounded polling until nothing accepts connections on ``host:port``."""
    wait_until(lambda: not port_is_open(host, port), timeout_s, f"{host}:{port} to close")


def process_group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes in process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def process_group_alive(pgid: int) -> bool:
    """True while any live process of group ``pgid`` exists."""
    return bool(process_group_members(pgid))
