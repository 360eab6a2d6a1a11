"""Postfix's ``smtp-sink`` (a fast SMTP server that discards mail) and ``smtp-source``.

``smtp_sink()`` starts ``smtp-sink -u nobody ... 127.0.0.1:PORT BACKLOG`` in its own process
group and returns once it greets with ``220``. Failures are scripted with smtp-sink's options:
``hard_reject=["RCPT"]`` (``-f``: 5xx), ``soft_reject=["DATA"]`` (``-r``: 4xx),
``disconnect=["MAIL"]`` (``-q``: hang up without reply), ``hard_bounce_reply`` (``-B``).
``dump_dir`` (``-D DIR/dump``) makes smtp-sink append every mail transaction to dump files in
that folder (it must be writable by ``nobody``, hence not under pytest's 0700 tmp folders);
``SmtpSink.dumped()`` returns their content (envelope lines followed by the message).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.peers.ports import (
    LOOPBACK,
    free_port,
    process_group_alive,
    wait_for_greeting,
    wait_port_closed,
    wait_until,
)

SMTP_SINK_BIN = "smtp-sink"
SMTP_SOURCE_BIN = "smtp-source"
DEBIAN_PACKAGE = "postfix"


def _find(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        raise FileNotFoundError(f"{binary} not found: apt-get install {DEBIAN_PACKAGE}")
    return path


def smtp_sink_path() -> str:
    """Absolute path of Postfix's ``smtp-sink`` (FileNotFoundError if not installed)."""
    return _find(SMTP_SINK_BIN)


def smtp_source_path() -> str:
    """Absolute path of Postfix's ``smtp-source`` load generator."""
    return _find(SMTP_SOURCE_BIN)


class SmtpSink:
    """A running ``smtp-sink`` process; ``stop()`` ends its process group."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        host: str,
        port: int,
        args: list[str],
        dump_dir: Path | None = None,
    ) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.args = args
        self.dump_dir = dump_dir
        self.stderr_file: IO[bytes] | None = None

    def stderr_text(self) -> str:
        """What smtp-sink wrote to stderr so far (fatal errors, warnings)."""
        if self.stderr_file is None or self.stderr_file.closed:
            return ""
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def dumped(self) -> bytes:
        """Everything smtp-sink wrote to its dump files so far (needs ``dump_dir``)."""
        if self.dump_dir is None:
            raise ValueError("smtp_sink() was started without dump_dir")
        return b"".join(p.read_bytes() for p in sorted(self.dump_dir.glob("dump*")))

    @property
    def running(self) -> bool:
        """True while smtp-sink runs."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate smtp-sink; return once its processes are gone and the port is closed."""
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=timeout_s)
        wait_until(lambda: not process_group_alive(pgid), timeout_s, "smtp-sink to exit")
        if self.stderr_file is not None:
            self.stderr_file.close()
        wait_port_closed(self.host, self.port, timeout_s)


def smtp_sink(
    port: int | None = None,
    *,
    host: str = LOOPBACK,
    backlog: int = 256,
    hostname: str = "sink.test",
    hard_reject: Sequence[str] = (),
    soft_reject: Sequence[str] = (),
    disconnect: Sequence[str] = (),
    hard_bounce_reply: str | None = None,
    soft_bounce_reply: str | None = None,
    dump_dir: str | os.PathLike[str] | None = None,
    max_concurrency: int = 1024,
    extra_args: Sequence[str] = (),
    timeout_s: float = 10.0,
) -> SmtpSink:
    """Start ``smtp-sink`` on ``host:port`` (a free port by default) and wait for its greeting."""
    binary = smtp_sink_path()
    port = port or free_port(host)
    args = [binary, "-h", hostname, "-m", str(max_concurrency)]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    if hard_reject:
        args += ["-f", ",".join(hard_reject)]
    if soft_reject:
        args += ["-r", ",".join(soft_reject)]
    if disconnect:
        args += ["-q", ",".join(disconnect)]
    if hard_bounce_reply:
        args += ["-B", hard_bounce_reply]
    if soft_bounce_reply:
        args += ["-b", soft_bounce_reply]
    if dump_dir is not None:
        dump = Path(dump_dir)
        dump.mkdir(parents=True, exist_ok=True)
        dump.chmod(0o1777)  # smtp-sink creates its dump files as nobody
        args += ["-D", str(dump / "dump")]
    args += [*extra_args, f"{host}:{port}", str(backlog)]
    # stderr goes to a file, not a pipe: a pipe nobody reads would block smtp-sink when full.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by SmtpSink.stop()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    sink = SmtpSink(proc, host, port, args, Path(dump_dir) if dump_dir is not None else None)
    sink.stderr_file = stderr
    try:
        wait_for_greeting(host, port, b"220", timeout_s, alive=lambda: sink.running)
    except Exception as exc:
        err = sink.stderr_text()
        sink.stop()
        raise RuntimeError(f"smtp-sink did not start ({' '.join(args)}): {exc}\n{err}") from exc
    return sink
