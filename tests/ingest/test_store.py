"""Batched storing: gateway.messages.store_messages, ingest.store.store_batch and the shared
Committer (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from gateway.app import App
from gateway.messages import MailboxPosition, MessageRecord, store_message, store_messages
from gateway.secretkey import CredentialBox
from ingest.accounts import Account, add_account
from ingest.committer import Committer
from ingest.store import Pending, analyse, load_sync, store_batch
from tests.ingest.helpers import message


async def _account(app: App, tenant: str = "t1", address: str = "box@store.test") -> Account:
    return await add_account(
        app.db,
        CredentialBox(app.secret_key),
        tenant_id=tenant,
        address=address,
        imap_host="127.0.0.1",
        imap_port=143,
        imap_security="none",
        username=address,
        password="pw",
    )


def _pending(account: Account, uid: int, raw: bytes, uidvalidity: int = 7) -> Pending:
    position = MailboxPosition(account.id, "INBOX", uidvalidity, uid)
    return Pending(account, position, analyse(raw, 1 << 20))


async def _rows(app: App, table: str) -> int:
    return int(await app.db.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 - constant


async def test_store_messages_matches_store_message_row_for_row(app: App) -> None:
    """The batched insert stores the same columns as the one-message path."""
    account = await _account(app)
    raws = [message(n, pdf=n == 1) for n in range(3)]
    records = [
        dataclasses.replace(_record(account, n, raws[n]), dedupe_key=f"batch:{n}", tenant_id="tb")
        for n in range(3)
    ]
    singles = [
        dataclasses.replace(
            r,
            dedupe_key=f"single:{n}",
            position=dataclasses.replace(r.position, uidvalidity=99) if r.position else None,
        )
        for n, r in enumerate(records)
    ]
    async with app.db.acquire() as conn:
        batched = await store_messages(conn, records)
        for r in singles:
            await store_message(conn, r)
        query = (
            "SELECT c.content_text, c.content_html, c.headers, c.raw, c.raw_size_bytes, "
            "m.message_type, m.from_email, m.to_email, m.subject, m.message_id, m.uid, "
            'm.folder, m."references", (SELECT array_agg(a.content ORDER BY a.part_index) '
            "FROM attachments a WHERE a.parent_storage_key = c.storage_key) AS parts "
            "FROM email_content c JOIN email_messages m USING (storage_key) "
            "WHERE c.storage_key = $1"
        )
        for b, single in zip(batched, singles, strict=True):
            assert b.created
            got = dict(await conn.fetchrow(query, b.storage_key))
            want = dict(await conn.fetchrow(query, single.storage_key))
            assert got == want
    assert batched[1].attachment_count == 1


def _record(account: Account, n: int, raw: bytes) -> MessageRecord:
    from ingest.store import build_record

    pending = _pending(account, n + 1, raw)
    return build_record(account, pending.position, pending.analysed, "email", None)


async def test_store_messages_repeats_and_known_keys_are_no_ops(app: App) -> None:
    """A record stored before, or repeated in the batch, creates nothing; the position moves."""
    account = await _account(app)
    first = _record(account, 0, message(0))
    again = _record(account, 1, message(1))
    async with app.db.acquire() as conn:
        await store_message(conn, first)
        results = await store_messages(conn, [first, again, again])
    assert [r.created for r in results] == [False, True, False]
    assert await _rows(app, "email_messages") == 2
    sync = await load_sync(app.db, account, "INBOX")
    assert sync is not None and sync.last_uid == 2


async def test_store_batch_recognises_identical_bytes_within_a_batch(app: App) -> None:
    """After a UIDVALIDITY change the same bytes under a new UID are not stored again, even
    when both copies are in one batch."""
    account = await _account(app)
    raw = message(5)
    async with app.db.acquire() as conn:
        outcomes = await store_batch(
            conn,
            [
                _pending(account, 1, raw),
                _pending(account, 2, raw),
                _pending(account, 3, message(6)),
            ],
        )
        assert [o.created for o in outcomes] == [True, False, True]
        assert outcomes[0].storage_key == outcomes[1].storage_key
        resync = await store_batch(conn, [_pending(account, 1, raw, uidvalidity=8)])
    assert [o.created for o in resync] == [False]
    assert await _rows(app, "email_messages") == 2
    sync = await load_sync(app.db, account, "INBOX")
    assert sync is not None and (sync.uidvalidity, sync.last_uid) == (8, 1)
    routed = await app.db.fetchval("SELECT count(*) FROM email_messages WHERE routed_at IS NULL")
    assert routed == 0  # nothing to route: marked in the storing transaction


async def test_committer_shares_one_transaction_and_isolates_a_failing_batch(app: App) -> None:
    """Batches waiting together commit together; a batch that cannot be stored fails alone."""
    good = await _account(app, address="good@store.test")
    other = await _account(app, address="other@store.test")
    ghost = dataclasses.replace(good, id="no-such-account")  # fingerprint FK fails
    committer = Committer(app.db, committers=1, max_messages=100, max_bytes=1 << 30)
    blocker = asyncio.ensure_future(committer.commit([_pending(other, 1, message(1))]))
    waiting = [
        asyncio.ensure_future(committer.commit([_pending(good, 1, message(2))])),
        asyncio.ensure_future(committer.commit([_pending(ghost, 1, message(3))])),
        asyncio.ensure_future(committer.commit([_pending(other, 2, message(4))])),
    ]
    results = await asyncio.gather(blocker, *waiting, return_exceptions=True)
    assert isinstance(results[2], asyncpg.ForeignKeyViolationError)
    assert [o.created for r in (results[0], results[1], results[3]) for o in r] == [True] * 3
    assert await _rows(app, "email_messages") == 3
    assert not committer.busy
    await committer.close()


async def test_committer_close_fails_waiters_with_store_interrupted(app: App) -> None:
    """Closing while batches wait answers them with StoreInterrupted, never leaves them hanging."""
    from ingest.errors import StoreInterrupted

    account = await _account(app)
    committer = Committer(app.db, committers=1, max_messages=1, max_bytes=1 << 30)
    first = asyncio.ensure_future(committer.commit([_pending(account, 1, message(1))]))
    second = asyncio.ensure_future(committer.commit([_pending(account, 2, message(2))]))
    await asyncio.sleep(0)  # both queued (the first maybe taken): close cuts either short
    await committer.close()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, StoreInterrupted) for r in results), results
    sync = await load_sync(app.db, account, "INBOX")
    assert sync is None  # the cancelled commit rolled back


@pytest.mark.parametrize("size", [0, 1])
async def test_empty_batches_store_nothing(app: App, size: int) -> None:
    """An empty batch is a no-op for both layers."""
    account = await _account(app)
    async with app.db.acquire() as conn:
        assert await store_messages(conn, []) == []
        batch = [_pending(account, 1, message(1))][:size]
        assert len(await store_batch(conn, batch)) == size
    assert await _rows(app, "email_messages") == size
