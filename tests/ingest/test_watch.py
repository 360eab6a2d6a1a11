"""IMAP ingest against the real Dovecot: IDLE arrival, catch-up, master user, UIDVALIDITY."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from gateway.app import App
from tests.ingest.helpers import Appender, add, count, message, new_mailbox, poll
from tests.peers.dovecot import MAIL_GID, MAIL_UID, Dovecot


async def test_new_mail_arrives_by_idle(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """A message APPENDed while the watcher IDLEs is stored with its parts and position."""
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    component = await ingest()
    await poll(lambda: _idling(component), bool, 15)
    async with Appender(dovecot, box) as client:
        await client.append(message(1, pdf=True))
    await poll(lambda: count(app, account.id), lambda n: n == 1)
    row = await app.db.fetchrow(
        "SELECT * FROM email_messages WHERE email_account_id=$1", account.id
    )
    assert row["source"] == "imap" and row["uid"] == 1 and row["folder"] == "INBOX"
    assert row["subject"] == "message 1" and row["from_email"] == "sender1@example.test"
    att = await app.db.fetch("SELECT filename, mime_type, size_bytes FROM attachments")
    assert [(a["filename"], a["mime_type"]) for a in att] == [("doc1.pdf", "application/pdf")]
    sync = await app.db.fetchrow("SELECT * FROM mailbox_sync WHERE account_id=$1", account.id)
    assert sync["last_uid"] == 1


async def _idling(component: Any) -> bool:
    from ingest.machine import State

    return component.states().get(State.IDLING, 0) >= 1


async def test_catch_up_after_downtime(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """Mail delivered while no watcher ran is fetched on start, once, and the \\Seen flag is
    left alone (BODY.PEEK)."""
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    for n in range(5):
        dovecot.deliver(box.address, message(n))
    component = await ingest()
    await poll(lambda: count(app, account.id), lambda n: n == 5)
    await component.stop(0)
    for n in range(5, 8):
        dovecot.deliver(box.address, message(n))
    await ingest()
    await poll(lambda: count(app, account.id), lambda n: n == 8)
    assert dovecot.status(box.address)["unseen"] == 8


async def test_large_backlog_is_stored_once(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """A backlog of 1,500 small messages (sized 200 UIDs per FETCH, fetched 100 per batch,
    batches pipelined through the shared committer) is stored exactly once, all UIDs."""
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    dovecot.deliver(box.address, message(0))  # creates the Maildir
    new = dovecot.home(box.address) / "Maildir" / "new"
    for n in range(1, 1500):
        path = new / f"{1700000000 + n}.M{n}P1.test"
        path.write_bytes(b"From: a@example.test\r\nSubject: s%d\r\n\r\nbody %d\r\n" % (n, n))
        os.chown(path, MAIL_UID, MAIL_GID)
    await ingest()
    await poll(lambda: count(app, account.id), lambda n: n == 1500, 60)
    rows = await app.db.fetch(
        "SELECT uid, subject FROM email_messages WHERE email_account_id = $1", account.id
    )
    assert sorted(r["uid"] for r in rows) == list(range(1, 1501))
    assert {r["subject"] for r in rows} == {"message 0"} | {f"s{n}" for n in range(1, 1500)}
    sync = await app.db.fetchrow("SELECT * FROM mailbox_sync WHERE account_id=$1", account.id)
    assert sync["last_uid"] == 1500


async def test_master_user_login(app: App, dovecot: Dovecot, ingest: Callable[..., Any]) -> None:
    """A mailbox added with the Dovecot master user is watched with `user*master`."""
    box = new_mailbox(dovecot)
    account = await add(
        app, dovecot, box, password=dovecot.master_password, master_user=dovecot.master_user
    )
    dovecot.deliver(box.address, message(1))
    await ingest()
    await poll(lambda: count(app, account.id), lambda n: n == 1)


async def test_uidvalidity_change_stores_nothing_twice(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """After a UIDVALIDITY change the folder is resynced: old messages are recognised, a new
    one is stored, nothing twice, and the sync state names the new UIDVALIDITY."""
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    for n in range(3):
        dovecot.deliver(box.address, message(n))
    await ingest()
    await poll(lambda: count(app, account.id), lambda n: n == 3)
    new_value = dovecot.change_uidvalidity(box.address)
    dovecot.deliver(box.address, message(99))
    await poll(
        lambda: app.db.fetchval(
            "SELECT uidvalidity FROM mailbox_sync WHERE account_id=$1", account.id
        ),
        lambda v: v == new_value,
    )
    await poll(lambda: count(app, account.id), lambda n: n == 4)
    sync = await app.db.fetchrow("SELECT * FROM mailbox_sync WHERE account_id=$1", account.id)
    assert sync["last_uid"] == 4
    assert await count(app, account.id) == 4


async def test_accounts_added_and_removed_while_running(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """An account added while the component runs is watched within a poll; a removed one is
    no longer watched and its lease is released."""
    from ingest.accounts import remove_account
    from ingest.coordination import LEASE_PREFIX

    component = await ingest()
    assert component.states() == {}
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    await poll(lambda: _idling(component), bool, 15)
    assert await app.redis.get(LEASE_PREFIX + account.id) == component.holder.encode()
    assert await remove_account(app.db, "t1", account.id)

    async def watched() -> int:
        return len(component.mailboxes)

    await poll(watched, lambda n: n == 0, 15)
    assert await app.redis.get(LEASE_PREFIX + account.id) is None
