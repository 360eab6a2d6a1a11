"""Ingest under faults: connections cut during IDLE, Dovecot restarted mid-stream, two
instances sharing mailboxes with one dying, and a 60 MB message."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.app import App, Urls, open_app
from gateway.settings import Settings
from ingest.component import IngestComponent
from ingest.machine import State
from tests.ingest.helpers import Appender, add, count, message, new_mailbox, poll
from tests.peers.dovecot import Dovecot
from tests.peers.fixtures import private_dir
from tests.peers.proxy import TcpProxy


@pytest.fixture
def own_dovecot() -> Iterator[Dovecot]:
    """A private Dovecot this test may stop and restart (the shared one stays up)."""
    path = private_dir("dovecot")
    server = Dovecot(path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


async def _idling(component: IngestComponent, n: int = 1) -> None:
    async def probe() -> int:
        return component.states().get(State.IDLING, 0)

    await poll(probe, lambda v: v >= n, 20)


async def test_connection_cut_during_idle(
    app: App,
    dovecot: Dovecot,
    ingest: Callable[..., Any],
    tcp_proxy: Callable[[str, int], Awaitable[TcpProxy]],
) -> None:
    """A connection cut while IDLEing is noticed at once (connection-lost callback), the
    watcher reconnects with backoff and mail that arrived meanwhile is stored."""
    proxy = await tcp_proxy(dovecot.host, dovecot.port)
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    await app.db.execute("UPDATE email_accounts SET imap_port=$1", proxy.port)
    component = await ingest()
    await _idling(component)
    proxy.pause()
    assert proxy.cut() == 1
    dovecot.deliver(box.address, message(1))
    await poll(
        lambda: asyncio.sleep(0, component.metrics.reconnects._value.get()), lambda v: v >= 1
    )
    proxy.resume()
    await poll(lambda: count(app, account.id), lambda n: n == 1)
    await _idling(component)


async def test_dovecot_restart_mid_stream(
    app: App, own_dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """Messages APPENDed before, during and after a Dovecot restart are all stored, once."""
    box = new_mailbox(own_dovecot)
    account = await add(app, own_dovecot, box)
    component = await ingest()
    await _idling(component)
    async with Appender(own_dovecot, box) as client:
        for n in range(10):
            await client.append(message(n))
    await asyncio.to_thread(own_dovecot.stop)
    await poll(lambda: asyncio.sleep(0, component.states().get(State.BACKOFF, 0)), bool)
    await asyncio.to_thread(own_dovecot.start)
    for n in range(10, 15):  # before the watcher is back: found by catch-up
        own_dovecot.deliver(box.address, message(n))
    await _idling(component)
    async with Appender(own_dovecot, box) as client:
        for n in range(15, 20):  # pushed by IDLE on the new session
            await client.append(message(n))
    await poll(lambda: count(app, account.id), lambda n: n >= 20, 40)
    assert await count(app, account.id) == 20
    assert component.metrics.reconnects._value.get() >= 1


async def test_two_instances_one_dies(
    app: App, settings: Settings, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """Two instances split four mailboxes (each watched by exactly one); when one dies
    without releasing its leases, the other takes its mailboxes over within the lease TTL
    and stores their new mail."""
    assert settings.database_url is not None and settings.redis_url is not None
    urls = Urls(settings.database_url.get_secret_value(), settings.redis_url.get_secret_value())
    boxes = [new_mailbox(dovecot) for _ in range(4)]
    accounts = [await add(app, dovecot, b) for b in boxes]
    first = await ingest(holder="instance-a")
    async with open_app(settings, urls) as app_b:
        second = IngestComponent(app_b, holder="instance-b")
        await second.start()
        try:
            await poll(
                lambda: asyncio.sleep(0, len(first.mailboxes) + len(second.mailboxes)),
                lambda n: n == 4,
            )
            assert not set(first.mailboxes) & set(second.mailboxes)
            assert set(first.mailboxes) | set(second.mailboxes) == {a.id for a in accounts}
            victim, survivor = (first, second) if first.mailboxes else (second, first)
            orphaned = set(victim.mailboxes)
            await _die(victim)
            for account, box in zip(accounts, boxes, strict=True):
                if account.id in orphaned:
                    dovecot.deliver(box.address, message(1))
            loop = asyncio.get_running_loop()
            started = loop.time()
            await poll(
                lambda: app.db.fetchval(
                    "SELECT count(*) FROM email_messages WHERE email_account_id = ANY($1)",
                    list(orphaned),
                ),
                lambda n: n == len(orphaned),
                30,
            )
            assert loop.time() - started < 30
            assert orphaned <= set(survivor.mailboxes)
        finally:
            await second.stop(asyncio.get_running_loop().time() + 5)


async def _die(component: IngestComponent) -> None:
    """Stop like a killed process: no lease release, no logout."""
    for task in component._loops:
        task.cancel()
    tasks = [t for box in component.mailboxes.values() for t in box.tasks]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*component._loops, *tasks, return_exceptions=True)
    component._loops = []
    component.mailboxes.clear()


async def test_sixty_megabyte_message(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """A 60 MB message is stored raw with its headers and no parts (over the 50 MB limit),
    and a small message of another mailbox is stored meanwhile."""
    big_box, small_box = new_mailbox(dovecot), new_mailbox(dovecot)
    big, small = await add(app, dovecot, big_box), await add(app, dovecot, small_box)
    head = b"From: a@x.test\r\nSubject: huge\r\nMessage-ID: <huge@x.test>\r\n\r\n"
    line = b"x" * 998 + b"\r\n"
    raw = head + line * (60 * 1024 * 1024 // len(line))
    await asyncio.to_thread(dovecot.deliver, big_box.address, raw)
    await ingest()
    dovecot.deliver(small_box.address, message(1))
    await poll(lambda: count(app, small.id), lambda n: n == 1, 60)
    await poll(lambda: count(app, big.id), lambda n: n == 1, 90)
    row = await app.db.fetchrow(
        "SELECT m.status, m.subject, c.raw_size_bytes, length(c.raw) AS raw_len, c.parse_error "
        "FROM email_messages m JOIN email_content c USING (storage_key) "
        "WHERE m.email_account_id = $1",
        big.id,
    )
    assert row["status"] == "too_large" and row["subject"] == "huge"
    assert row["raw_len"] == len(raw) == row["raw_size_bytes"]
    assert await app.db.fetchval("SELECT count(*) FROM attachments") == 0
