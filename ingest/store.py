"""Storing one fetched message exactly once, with the folder's sync state, in ONE transaction.

Two identities guard against doubles:

* the dedupe key ``imap:<account>:<folder>:<uidvalidity>:<uid>`` (via
  :func:`gateway.messages.store_message`): a re-fetch after a crash or reconnect is a no-op;
* the raw message's SHA-256 per (account, folder) in ``ingest_fingerprints``: after a
  UIDVALIDITY change every UID is new, yet a message already stored is recognised and only
  the sync position moves.

Messages of one folder are stored one at a time in UID order, so ``mailbox_sync.last_uid``
is always the highest UID below which everything is stored: a crash at any instant resumes
exactly there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import asyncpg

from gateway.messages import MailboxPosition, MessageRecord, store_message
from ingest.accounts import Account
from ingest.parse import ParsedMessage, parse_message

_FIND_FINGERPRINT = """
SELECT storage_key FROM ingest_fingerprints
WHERE tenant_id = $1 AND account_id = $2 AND folder = $3 AND fingerprint = $4
"""

_ADD_FINGERPRINT = """
INSERT INTO ingest_fingerprints (tenant_id, account_id, folder, fingerprint, storage_key)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
"""

_ADVANCE_SYNC = """
INSERT INTO mailbox_sync (tenant_id, account_id, folder, uidvalidity, last_uid, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (account_id, folder) DO UPDATE SET
    uidvalidity = EXCLUDED.uidvalidity,
    last_uid = CASE WHEN mailbox_sync.uidvalidity = EXCLUDED.uidvalidity
                    THEN greatest(mailbox_sync.last_uid, EXCLUDED.last_uid)
                    ELSE EXCLUDED.last_uid END,
    updated_at = now()
"""


@dataclass(frozen=True)
class Analysed:
    """A fetched message after the CPU work (parse, classify, hash): off the loop if large."""

    raw: bytes
    parsed: ParsedMessage
    kind: str
    fingerprint: bytes


def analyse(raw: bytes, max_bytes: int) -> Analysed:
    """Parse, classify and fingerprint ``raw`` (pure; safe in a worker thread)."""
    from ingest.classify import message_type

    parsed = parse_message(raw, max_bytes=max_bytes)
    return Analysed(raw, parsed, message_type(parsed), hashlib.sha256(raw).digest())


@dataclass(frozen=True)
class SyncState:
    uidvalidity: int
    last_uid: int


async def load_sync(
    conn: asyncpg.Pool | asyncpg.Connection, account: Account, folder: str
) -> SyncState | None:
    row = await conn.fetchrow(
        "SELECT uidvalidity, last_uid FROM mailbox_sync "
        "WHERE tenant_id = $1 AND account_id = $2 AND folder = $3",
        account.tenant_id,
        account.id,
        folder,
    )
    return SyncState(row["uidvalidity"], row["last_uid"]) if row is not None else None


def build_record(
    account: Account,
    position: MailboxPosition,
    item: Analysed,
    kind: str,
    delivery_id: str | None,
) -> MessageRecord:
    p = item.parsed
    return MessageRecord(
        tenant_id=account.tenant_id,
        dedupe_key=f"imap:{account.id}:{position.folder}:{position.uidvalidity}:{position.uid}",
        direction="inbound",
        message_type=kind,
        email_account_id=account.id,
        from_email=p.from_email,
        to_emails=p.to_emails,
        subject=p.subject,
        text=p.text,
        html=p.html,
        headers=p.headers,
        raw=item.raw,
        raw_size=len(item.raw),
        message_id=p.message_id,
        in_reply_to=p.in_reply_to,
        references=p.references,
        attachments=p.attachments,
        source="imap",
        status=p.status,
        parse_error=p.parse_error,
        position=position,
        delivery_id=delivery_id,
    )


@dataclass(frozen=True)
class Stored:
    storage_key: str
    created: bool


async def store_fetched(
    conn: asyncpg.Connection, record: MessageRecord, fingerprint: bytes, *, routed: bool = False
) -> Stored:
    """Store once (see module docstring); the sync position moves either way. ``routed``:
    nothing to do after the commit, so ``routed_at`` is set in the same transaction."""
    pos = record.position
    assert pos is not None
    async with conn.transaction():
        seen = await conn.fetchval(
            _FIND_FINGERPRINT, record.tenant_id, pos.account_id, pos.folder, fingerprint
        )
        if seen is not None:
            await conn.execute(
                _ADVANCE_SYNC,
                record.tenant_id,
                pos.account_id,
                pos.folder,
                pos.uidvalidity,
                pos.uid,
            )
            return Stored(seen, created=False)
        result = await store_message(conn, record)
        await conn.execute(
            _ADD_FINGERPRINT,
            record.tenant_id,
            pos.account_id,
            pos.folder,
            fingerprint,
            result.storage_key,
        )
        if routed and result.created:
            await conn.execute(
                "UPDATE email_messages SET routed_at = now() "
                "WHERE tenant_id = $1 AND storage_key = $2",
                record.tenant_id,
                result.storage_key,
            )
    return Stored(result.storage_key, result.created)


def latency_s(internal_date: dt.datetime | None) -> float | None:
    """Server arrival (INTERNALDATE, whole seconds) to now."""
    if internal_date is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - internal_date).total_seconds())
