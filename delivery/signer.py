"""DKIM signing in a helper process, batched over a pipe.

Canonicalising the signed headers (dkimpy, pure Python, ~0.05 ms) and an RSA-2048 signature
(~0.26 ms) were the largest CPU costs of a send on the event loop. Where they run, measured
with ``bench/delivery.py`` part (b) on this 2-core machine (see ``bench/README.md``): RSA on
the event loop 1,152 msg/s; on a two-thread pool 1,086 msg/s (the GIL hand-off after every
signature costs the loop more than the signature it saves); in this helper process, which
has its own interpreter and GIL, the loop only copies the message into a batch and reads
back the DKIM-Signature header lines.

Pure framing is separate from the process plumbing. Frames in both directions are a 4-byte
big-endian length and a body:

* ``K`` + key number (u32) + domain and selector (each a u8 length and the bytes) + the
  private key, PKCS#8 DER: register a key (no answer);
* ``S`` + n x (key count (u8) + key numbers (u32 each) + time (f64) + message length (u32) +
  the message): sign, answered in order by
* ``R`` + n x (status (u8) + length (u32) + bytes): status 0 the header lines, 1 an error
  text (temporary), 2 a message that cannot be signed (:class:`DkimKeyError`, permanent).

The child's first frame is an empty ``R``, written once its imports are done: a start ends
when the child can sign (~0.1 s here), and a child that cannot start is an error there.

The child ignores SIGINT and SIGTERM (a service manager signals the whole group; the daemon
drains its sends first and then closes the pipe) and exits when its input ends, which also
happens when the daemon dies. A child that dies fails the signatures it held with
:class:`SignerError` (the jobs are retried) and is started again on the next signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import struct
import sys
from collections import deque
from collections.abc import Sequence
from typing import BinaryIO

from delivery.dkimsign import DkimKey, DkimKeyError, signature_headers
from delivery.errors import SignerError

log = logging.getLogger(__name__)

MAX_BATCH = 16  # per frame: the child answers a frame whole, so a small one keeps latency low
MAX_FRAME = 64 * 1024 * 1024
HELLO = b"R"  # the child's first frame, once it is ready: an answer to nothing
_TIME_LEN = struct.Struct(">dI")


# -- framing (pure) --------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def key_frame(key_no: int, domain: str, selector: str, der: bytes) -> bytes:
    d, s = domain.encode(), selector.encode()
    return frame(b"K" + key_no.to_bytes(4, "big") + bytes([len(d)]) + d + bytes([len(s)]) + s + der)


def parse_key_frame(body: bytes) -> tuple[int, str, str, bytes]:
    key_no = int.from_bytes(body[1:5], "big")
    at = 5
    domain = body[at + 1 : at + 1 + body[at]].decode()
    at += 1 + body[at]
    selector = body[at + 1 : at + 1 + body[at]].decode()
    at += 1 + body[at]
    return key_no, domain, selector, body[at:]


def sign_frame(requests: Sequence[tuple[Sequence[int], float, bytes]]) -> bytes:
    parts = [b"S"]
    for key_nos, now, message in requests:
        parts.append(bytes([len(key_nos)]))
        parts.extend(n.to_bytes(4, "big") for n in key_nos)
        parts.append(_TIME_LEN.pack(now, len(message)))
        parts.append(message)
    return frame(b"".join(parts))


def parse_sign_frame(body: bytes) -> list[tuple[list[int], float, bytes]]:
    out: list[tuple[list[int], float, bytes]] = []
    at = 1
    while at < len(body):
        count = body[at]
        at += 1
        key_nos = [int.from_bytes(body[at + 4 * i : at + 4 * i + 4], "big") for i in range(count)]
        at += 4 * count
        now, length = _TIME_LEN.unpack_from(body, at)
        at += _TIME_LEN.size
        out.append((key_nos, now, body[at : at + length]))
        at += length
    return out


def result_entry(status: int, data: bytes) -> bytes:
    return bytes([status]) + len(data).to_bytes(4, "big") + data


def parse_results(body: bytes) -> list[tuple[int, bytes]]:
    """An ``R`` body as (status, header lines or error text) per request, in order."""
    if body[:1] != b"R":
        raise SignerError(f"DKIM signer answered {body[:1]!r}, not R")
    out: list[tuple[int, bytes]] = []
    at = 1
    while at < len(body):
        status, length = body[at], int.from_bytes(body[at + 1 : at + 5], "big")
        out.append((status, body[at + 5 : at + 5 + length]))
        at += 5 + length
    return out


# -- the parent's side ------------------------------------------------------------------------


class SignerProcess:
    """DKIM-signs messages in a child process; requests made during one loop iteration share
    frames (16 per frame). Keys are registered with the child the first time they are used."""

    def __init__(self, *, start_timeout_s: float = 15.0, argv: Sequence[str] | None = None):
        self.start_timeout_s = start_timeout_s
        self.argv = list(argv) if argv else [sys.executable, "-m", "delivery.signer"]
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._keys: dict[tuple[str, str, bytes], int] = {}
        self._queued: list[tuple[list[int], float, bytes, asyncio.Future[bytes]]] = []
        self._in_flight: deque[list[asyncio.Future[bytes]]] = deque()
        self._flush_planned = False
        self._closed = False
        self._prestart: asyncio.Task[None] | None = None
        self.starts = 0

    def prestart(self) -> None:
        """Start the child now, in the background (when a loop runs), so the first send
        does not wait for an interpreter to start; a failure here is retried on use."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._prestart = loop.create_task(self._start_quietly(), name="dkim-signer-start")

    async def started(self) -> None:
        """Wait for :meth:`prestart`'s start (the child ready to sign), if one was asked
        for."""
        if self._prestart is not None:
            await asyncio.shield(self._prestart)

    async def _start_quietly(self) -> None:
        try:
            await self._running()
        except SignerError as exc:
            log.warning(
                "DKIM signer did not start; retrying on first use", extra={"error": str(exc)}
            )

    async def sign(self, keys: Sequence[DkimKey], message: bytes, now: float) -> bytes:
        """The DKIM-Signature header lines for ``message``, one per key (as
        :func:`delivery.dkimsign.signature_headers` makes them)."""
        proc = await self._running()
        key_nos = []
        for key in keys:
            ident = (key.domain, key.selector, key.der)
            key_no = self._keys.get(ident)
            if key_no is None:
                key_no = self._keys[ident] = len(self._keys) + 1
                self._write(proc, key_frame(key_no, key.domain, key.selector, key.der))
            key_nos.append(key_no)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queued.append((key_nos, now, message, future))
        if not self._flush_planned:
            self._flush_planned = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    @property
    def _alive(self) -> bool:
        """A child runs and its answers are being read."""
        proc = self._proc
        return proc is not None and proc.returncode is None and self._reader is not None

    async def _running(self) -> asyncio.subprocess.Process:
        if self._closed:
            raise SignerError("the DKIM signer is closed")
        if self._alive and self._proc is not None:
            return self._proc
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._alive:
                await self._start()
            assert self._proc is not None
            return self._proc

    async def _start(self) -> None:
        proc: asyncio.subprocess.Process | None = None
        try:
            async with asyncio.timeout(self.start_timeout_s):
                proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                # The child says hello (an empty R frame) once its imports are done: a
                # start is over when the child can sign, and one that fails is seen here.
                assert proc.stdout is not None
                head = await proc.stdout.readexactly(4)
                hello = await proc.stdout.readexactly(min(int.from_bytes(head, "big"), 64))
                if hello != HELLO:
                    raise OSError(f"it said {hello[:20]!r} instead of hello")
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            if proc is not None:
                await _reap(proc)
            if isinstance(exc, asyncio.IncompleteReadError):
                why = "it exited during start-up"
            else:
                why = str(exc) or f"no answer within {self.start_timeout_s:g} s"
            raise SignerError(f"cannot start the DKIM signer: {why}") from None
        except BaseException:  # cancelled while the child starts: it must not outlive us
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            raise
        self._proc = proc
        self._keys = {}  # a new child knows no keys
        self.starts += 1
        self._reader = asyncio.create_task(self._read(proc), name="dkim-signer-reader")

    def _write(self, proc: asyncio.subprocess.Process, data: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(data)

    def _flush(self) -> None:
        self._flush_planned = False
        proc = self._proc
        while self._queued:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            futures = [f for *_, f in batch]
            if proc is None or not self._alive:
                # (no reader: nobody would ever answer these; the next sign() restarts it)
                _fail(futures, SignerError("the DKIM signer is not running"))
                continue
            try:
                self._write(proc, sign_frame([(k, now, m) for k, now, m, _ in batch]))
            except (OSError, RuntimeError) as exc:
                _fail(futures, SignerError(f"DKIM signer pipe: {exc}"))
                continue
            self._in_flight.append(futures)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        reason = "the DKIM signer exited"
        ended = False  # the child closed its output: it is exiting by itself
        try:
            while True:
                head = await proc.stdout.readexactly(4)
                size = int.from_bytes(head, "big")
                if size > MAX_FRAME:
                    reason = f"the DKIM signer sent a frame of {size} bytes"
                    break
                results = parse_results(await proc.stdout.readexactly(size))
                futures = self._in_flight.popleft() if self._in_flight else []
                if len(results) != len(futures):
                    reason = "the DKIM signer answered a batch of the wrong size"
                    break
                for future, (status, data) in zip(futures, results, strict=True):
                    if future.done():
                        continue
                    if status == 0:
                        future.set_result(data)
                    elif status == 2:
                        future.set_exception(DkimKeyError(data.decode(errors="replace")))
                    else:
                        future.set_exception(SignerError(data.decode(errors="replace")))
        except asyncio.IncompleteReadError:
            ended = True
        except (ConnectionError, SignerError) as exc:
            reason = str(exc) or reason
        finally:
            self._reader = None
            failed = [f for batch in self._in_flight for f in batch]
            self._in_flight.clear()
            _fail(failed, SignerError(reason))
            if not ended and proc.returncode is None:
                # A child that broke the protocol. Not one that ended by itself: kill()
                # polls first, which would reap it under asyncio's child watcher.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if failed and not self._closed:
                log.warning(
                    "DKIM signer failed; restarting on the next signature",
                    extra={"error": reason, "signatures_failed": len(failed)},
                )

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Let the child finish what it holds, then end it (closing its input)."""
        self._closed = True
        if self._prestart is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._prestart
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()
        try:
            async with asyncio.timeout(timeout_s):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """End a child that did not start: kill it, close its input, wait for it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    await proc.wait()


def _fail(futures: list[asyncio.Future[bytes]], exc: SignerError) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


# -- the child's side -------------------------------------------------------------------------


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames from ``inp`` on ``out`` until ``inp`` ends."""
    keys: dict[int, DkimKey] = {}
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        body = inp.read(int.from_bytes(head, "big"))
        kind = body[:1]
        if kind == b"K":
            key_no, domain, selector, der = parse_key_frame(body)
            keys[key_no] = DkimKey.from_der(domain, selector, der)
            continue
        if kind != b"S":
            return
        parts = [b"R"]
        for key_nos, now, message in parse_sign_frame(body):
            try:
                chosen = [keys[n] for n in key_nos]
                parts.append(result_entry(0, signature_headers(message, chosen, now=now)))
            except DkimKeyError as exc:
                parts.append(result_entry(2, str(exc).encode()))
            except Exception as exc:  # noqa: BLE001 - answered, not fatal: the job retries
                parts.append(result_entry(1, f"{type(exc).__name__}: {exc}".encode()))
        out.write(frame(b"".join(parts)))
        out.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.buffer.write(frame(HELLO))
    sys.stdout.buffer.flush()
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
