"""Bounce listener under a flood (issue 16): the real daemon (`mailgate run`, components
``bounces``) takes 200 concurrent ~9.75 MB messages from four client addresses while a fifth
address sends 30 small legitimate DSNs; prints what each got and the daemon's memory.

    python bench/bounces_flood.py [--large 200] [--small 30] [--size-mb 9.75]

Done when (issue 16): every small DSN gets 250 and is stored, and the daemon's peak RSS
(VmHWM) stays under 1 GiB. The large messages over the memory budget get 452 4.3.1 after
their data (a sender retries them later); memory comes back after the burst (RSS a few
seconds later). PostgreSQL and Redis are private embedded servers in a temporary
directory. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib

from gateway.embedded import EmbeddedServers
from gateway.storage import connect, migrate
from tests.peers.ports import free_port, wait_for_greeting

SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
DSN_SOURCE = "127.0.0.6"


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


def large_message(size: int) -> bytes:
    head = (
        b"From: MAILER-DAEMON@flood.test\r\nTo: b+flood@bounces.test\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain\r\n\r\n"
    )
    line = b"x" * 998 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


def small_dsn(n: int) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.rcpt.test\r\n"
        f"To: b+small{n}@bounces.test\r\n"
        f"Subject: Undelivered Mail Returned to Sender ({n})\r\n"
        f"Message-ID: <small-{n}@mx.rcpt.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.rcpt.test\r\n"
        f"\r\nFinal-Recipient: rfc822; user{n}@rcpt.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--B--\r\n"
    ).encode()


async def send_large(port: int, source: str, n: int, data: bytes) -> str:
    """One raw session; the reply to the end of data (or what went wrong)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError as exc:
        return f"connect: {exc}"

    async def reply() -> str:
        line = b""
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line.decode(errors="replace").strip() or "<closed>"

    try:
        async with asyncio.timeout(600):
            greeting = await reply()
            if not greeting.startswith("220"):
                return greeting
            for command in (b"EHLO flood.test", b"MAIL FROM:<flood@flood.test>",
                            b"RCPT TO:<b+flood%d@bounces.test>" % n, b"DATA"):  # fmt: skip
                writer.write(command + b"\r\n")
                await writer.drain()
                answer = await reply()
                if not answer.startswith(("250", "354")):
                    return answer
            writer.write(data)
            writer.write(b"\r\n.\r\n")
            await writer.drain()
            return await reply()
    except (OSError, TimeoutError) as exc:
        return f"error: {type(exc).__name__}"
    finally:
        writer.close()


async def send_small(port: int, n: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        await aiosmtplib.send(
            small_dsn(n),
            sender="mailer-daemon@mx.rcpt.test",
            recipients=[f"b+small{n}@bounces.test"],
            hostname="127.0.0.1",
            port=port,
            source_address=(DSN_SOURCE, 0),
            timeout=120,
        )
        answer = "250"
    except aiosmtplib.SMTPException as exc:
        answer = f"{type(exc).__name__}: {exc}"
    return answer, time.perf_counter() - t0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-flood-"))
    servers = EmbeddedServers(tmp, postgres=True, redis=True)
    db_url, redis_url = await asyncio.to_thread(servers.start)
    assert db_url and redis_url
    conn = await connect(db_url)
    await migrate(conn)
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(
        MAILGATE_DATABASE_URL=db_url,
        MAILGATE_REDIS_URL=redis_url,
        MAILGATE_DATA_DIR=str(tmp / "data"),
        MAILGATE_SECRET_KEY="f" * 40,
        MAILGATE_COMPONENTS="bounces",
        MAILGATE_SMTP_LISTEN=f"127.0.0.1:{port}",
        MAILGATE_HTTP_LISTEN=f"127.0.0.1:{http_port}",
        MAILGATE_BOUNCE_DOMAINS="bounces.test",
        MAILGATE_SMTP_HOSTNAME="mx.bounces.test",
        MAILGATE_LOG_LEVEL="WARNING",
    )
    if args.code:  # the daemon from another checkout (a before/after comparison)
        env["PYTHONPATH"] = args.code
    log = (tmp / "daemon.log").open("ab")
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "run",
        env=env,
        stdout=log,
        stderr=log,
        cwd=args.code,  # -m puts the working directory first on the path
    )
    samples: list[int] = []
    try:
        await asyncio.to_thread(wait_for_greeting, "127.0.0.1", port, b"220", 60.0)
        idle = rss_kb(daemon.pid)
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                samples.append(rss_kb(daemon.pid)["VmRSS"])
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        data = large_message(int(args.size_mb * 1024 * 1024))
        t0 = time.perf_counter()
        flood = [
            asyncio.create_task(send_large(port, SOURCES[n % len(SOURCES)], n, data))
            for n in range(args.large)
        ]
        await asyncio.sleep(args.small_after_s)  # the flood is under way
        smalls = await asyncio.gather(*(send_small(port, n) for n in range(args.small)))
        small_s = time.perf_counter() - t0
        large_replies = await asyncio.gather(*flood)
        flood_s = time.perf_counter() - t0
        await asyncio.sleep(args.settle_s)
        stop.set()
        await sampler
        after = rss_kb(daemon.pid)
        stored_small = await conn.fetchval(
            "SELECT count(*) FROM bounce_receipts WHERE rcpt_tos[1] LIKE 'b+small%'"
        )
        stored_large = await conn.fetchval(
            "SELECT count(*) FROM bounce_receipts WHERE rcpt_tos[1] LIKE 'b+flood%'"
        )
    finally:
        daemon.terminate()
        try:
            await asyncio.wait_for(daemon.wait(), 40)
        except TimeoutError:
            daemon.kill()
            await daemon.wait()
        await conn.close()
        await asyncio.to_thread(servers.stop)
    codes: dict[str, int] = {}
    for r in large_replies:
        codes[r[:9]] = codes.get(r[:9], 0) + 1
    small_ok = sum(1 for a, _ in smalls if a == "250")
    latencies = sorted(s for _, s in smalls)
    figures = {
        "large_sent": args.large,
        "large_mb_each": args.size_mb,
        "large_replies": codes,
        "large_stored": int(stored_large),
        "small_sent": args.small,
        "small_250": small_ok,
        "small_stored": int(stored_small),
        "small_latency_s_max": round(latencies[-1], 2),
        "small_latency_s_median": round(latencies[len(latencies) // 2], 2),
        "small_done_after_s": round(small_s, 1),
        "flood_s": round(flood_s, 1),
        "rss_idle_mb": round(idle["VmRSS"] / 1024),
        "rss_peak_mb": round(max(after["VmHWM"], *samples) / 1024),
        "rss_after_mb": round(after["VmRSS"] / 1024),
        "settle_s": args.settle_s,
        "done_when_small": small_ok == args.small == stored_small,
        "done_when_rss_under_1gib": after["VmHWM"] < 1024 * 1024,
    }
    for name, value in figures.items():
        print(f"{name:28s} {value}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=200)
    parser.add_argument("--small", type=int, default=30)
    parser.add_argument("--size-mb", type=float, default=9.75)
    parser.add_argument("--small-after-s", type=float, default=1.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--code", help="run the daemon from this checkout instead")
    ns = parser.parse_args()
    ns.code = str(Path(ns.code).resolve()) if ns.code else None
    print(json.dumps(asyncio.run(main(ns))))
