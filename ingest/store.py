"""Storing fetched messages exactly once, with the sync state, in ONE transaction per batch.

Two identities guard against doubles:

* the dedupe key ``imap:<account>:<folder>:<uidvalidity>:<uid>`` (via
  :func:`gateway.messages.store_messages`): a re-fetch after a crash or reconnect is a no-op;
* the raw message's SHA-256 per (account, folder) in ``ingest_fingerprints``: after a
  UIDVALIDITY change every UID is new, yet a message already stored is recognised and only
  the sync position moves.

Messages of one folder are committed in UID order (a watcher has at most one batch in a
commit at a time, and :func:`store_batch` writes a batch in one transaction), so
``mailbox_sync.last_uid`` is always the highest UID below which everything is stored: a
crash at any instant resumes exactly there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import asyncpg

from gateway.messagekind import classify_kind, lookup
from gateway.messages import MailboxPosition, MessageRecord, advance_sync, store_messages
from gateway.warmupmark import WarmupMarker
from ingest.accounts import Account
from ingest.parse import ParsedMessage, parse_message
from ingest.routing import Delivery, find_delivery

_ADD_FINGERPRINT = """
INSERT INTO ingest_fingerprints (tenant_id, account_id, folder, fingerprint, storage_key)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
"""



@dataclass(frozen=True)
class Analysed:
    """A fetched message after the CPU work (parse, classify, hash): off the loop if large."""

    raw: bytes
    parsed: ParsedMessage
    kind: str
    fingerprint: bytes


def message_type(parsed: ParsedMessage, marker: WarmupMarker | None = None) -> str:
    """The message's kind (:func:`gateway.messagekind.classify_kind`) from its parse;
    ``warmup`` only when ``marker`` verifies its Message-ID (else it is ordinary mail)."""
    kind = classify_kind(
        lookup(parsed.headers),
        content_type=parsed.content_type,
        report_type=parsed.report_type or "",
        warmup=marker is not None and marker.verify(parsed.message_id),
    )
    return kind.value


def analyse(raw: bytes, max_bytes: int, marker: WarmupMarker | None = None) -> Analysed:
    """Parse, classify and fingerprint ``raw`` (pure; safe in a worker thread)."""
    parsed = parse_message(raw, max_bytes=max_bytes)
    return Analysed(raw, parsed, message_type(parsed, marker), hashlib.sha256(raw).digest())


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
class Pending:
    """A fetched and analysed message waiting for its commit."""

    account: Account
    position: MailboxPosition
    analysed: Analysed


@dataclass(frozen=True)
class Outcome:
    """What became of a :class:`Pending` in its commit."""

    storage_key: str
    created: bool  # False: already stored (same UID, or same bytes after a UIDVALIDITY change)
    kind: str
    delivery: Delivery | None

    @property
    def needs_routing(self) -> bool:
        return self.kind in ("bounce", "complaint") or self.delivery is not None


_FIND_FINGERPRINTS = """
SELECT f.account_id, f.folder, f.fingerprint, f.storage_key
FROM ingest_fingerprints f
JOIN unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS u(t, a, fo, fp)
  ON f.tenant_id = u.t AND f.account_id = u.a AND f.folder = u.fo AND f.fingerprint = u.fp
"""

_MARK_ROUTED = """
UPDATE email_messages m SET routed_at = now()
FROM unnest($1::text[], $2::text[]) AS u(t, k)
WHERE m.tenant_id = u.t AND m.storage_key = u.k
"""


async def store_batch(conn: asyncpg.Connection, batch: list[Pending]) -> list[Outcome]:
    """Store ``batch`` (one or several folders, each in UID order) in ONE transaction with
    a few statements per batch rather than per message (see the module docstring for the
    two identities); the outcome of each message, in order. Messages that need no routing
    get ``routed_at`` in the same transaction."""
    async with conn.transaction():
        kinds: list[tuple[str, Delivery | None]] = []
        for p in batch:
            kinds.append(await _kind(conn, p))
        known = await _known_fingerprints(conn, batch)
        records: list[MessageRecord] = []
        fresh: list[int] = []
        outcomes: list[Outcome | None] = []
        for i, (p, (kind, delivery)) in enumerate(zip(batch, kinds, strict=True)):
            fp = (p.account.id, p.position.folder, p.analysed.fingerprint)
            seen = known.get(fp)
            if seen is not None:
                outcomes.append(Outcome(seen, False, kind, delivery))
                continue
            record = build_record(p.account, p.position, p.analysed, kind, _id(delivery))
            known[fp] = record.storage_key
            records.append(record)
            fresh.append(i)
            outcomes.append(None)
        results = await store_messages(conn, records)
        for i, result in zip(fresh, results, strict=True):
            kind, delivery = kinds[i]
            outcomes[i] = Outcome(result.storage_key, result.created, kind, delivery)
        prints = [
            (p.account.tenant_id, p.account.id, p.position.folder, p.analysed.fingerprint, key)
            for p, key in ((batch[i], r.storage_key) for i, r in zip(fresh, records, strict=True))
        ]
        if prints:
            await conn.executemany(_ADD_FINGERPRINT, prints)
        done = [o for o in outcomes if o is not None]
        routed = [
            (p.account.tenant_id, o.storage_key)
            for p, o in zip(batch, done, strict=True)
            if o.created and not o.needs_routing
        ]
        if routed:
            await conn.execute(_MARK_ROUTED, [t for t, _ in routed], [k for _, k in routed])
        await _advance_skipped(conn, batch, records)
    return done


async def _kind(conn: asyncpg.Connection, p: Pending) -> tuple[str, Delivery | None]:
    """The message type, and the platform delivery a reply answers (looked up before the
    insert: ``delivery_id`` and the ``reply`` type are stored with the message)."""
    parsed, kind = p.analysed.parsed, p.analysed.kind
    if kind not in ("email", "auto_reply") or not (parsed.in_reply_to or parsed.references):
        return kind, None
    delivery = await find_delivery(conn, p.account.tenant_id, parsed.in_reply_to, parsed.references)
    if delivery is not None and kind == "email":
        kind = "reply"
    return kind, delivery


async def _known_fingerprints(
    conn: asyncpg.Connection, batch: list[Pending]
) -> dict[tuple[str, str, bytes], str]:
    rows = await conn.fetch(
        _FIND_FINGERPRINTS,
        [p.account.tenant_id for p in batch],
        [p.account.id for p in batch],
        [p.position.folder for p in batch],
        [p.analysed.fingerprint for p in batch],
    )
    return {(r["account_id"], r["folder"], bytes(r["fingerprint"])): r["storage_key"] for r in rows}


async def _advance_skipped(
    conn: asyncpg.Connection, batch: list[Pending], stored: list[MessageRecord]
) -> None:
    """Move the sync state of folders whose highest UID in ``batch`` was recognised by its
    fingerprint (``store_messages`` moved the others)."""
    tops: dict[tuple[str, str], Pending] = {}
    for p in batch:
        key = (p.account.id, p.position.folder)
        if key not in tops or tops[key].position.uid < p.position.uid:
            tops[key] = p
    moved = {
        (r.position.account_id, r.position.folder): r.position.uid
        for r in stored
        if r.position is not None
    }
    for key, p in tops.items():
        if moved.get(key, -1) >= p.position.uid:
            continue
        await advance_sync(conn, p.account.tenant_id, p.position)


def _id(delivery: Delivery | None) -> str | None:
    return delivery.id if delivery is not None else None


def latency_s(internal_date: dt.datetime | None) -> float | None:
    """Server arrival (INTERNALDATE, whole seconds) to now."""
    if internal_date is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - internal_date).total_seconds())
