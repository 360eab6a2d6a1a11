"""Storing a message: ``email_content`` + ``email_messages`` + ``attachments`` (and, for
IMAP, the mailbox's sync state) in ONE transaction, exactly once.

Every writer (the incoming-email job handler, IMAP ingest, the bounce listener) builds a
:class:`MessageRecord` and calls :func:`store_message`. The record's ``dedupe_key`` is its
identity (``job:<account>:<Message-ID>``, ``imap:<account>:<folder>:<uidvalidity>:<uid>``);
the storage key is derived from it, so storing the same message again, after a crash, a
reconnect or a re-delivered job, finds the first copy and changes nothing.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg

MAX_TEXT_CHARS = 10_000_000  # a text column beyond this is truncated (the raw is kept whole)


@dataclass(frozen=True)
class AttachmentRecord:
    """One attachment or inline part, decoded."""

    filename: str | None
    mime_type: str
    content: bytes
    disposition: str = "attachment"  # attachment / inline
    content_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class MailboxPosition:
    """Where an IMAP message came from; stored with it, and the sync state moves to it."""

    account_id: str
    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class MessageRecord:
    """A message as mailgate stores it."""

    tenant_id: str
    dedupe_key: str
    direction: str = "inbound"
    message_type: str = "email"
    email_account_id: str | None = None
    from_email: str | None = None
    to_emails: tuple[str, ...] = ()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    raw_size: int | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[AttachmentRecord, ...] = ()
    source: str = "job"
    status: str = "received"
    parse_error: str | None = None
    position: MailboxPosition | None = None
    delivery_id: str | None = None

    @property
    def storage_key(self) -> str:
        """Deterministic from (tenant, dedupe key): the same message maps to the same key."""
        digest = hashlib.sha256(f"{self.tenant_id}\x00{self.dedupe_key}".encode()).hexdigest()
        return f"email_{digest[:40]}"


@dataclass(frozen=True)
class StoreResult:
    storage_key: str
    created: bool  # False: it was already stored (nothing changed)
    attachment_count: int


_INSERT_CONTENT = """
INSERT INTO email_content (storage_key, tenant_id, content_text, content_html, headers, raw,
                           raw_size_bytes, parse_error, created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (storage_key) DO NOTHING
"""

_INSERT_MESSAGE = """
INSERT INTO email_messages (storage_key, tenant_id, email_account_id, direction, message_type,
    from_email, to_email, subject, status, processed, message_id, in_reply_to, "references",
    delivery_id, source, folder, uidvalidity, uid, dedupe_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10, $11, $12, $13, $14, $15, $16, $17, $18)
"""

_INSERT_ATTACHMENT = """
INSERT INTO attachments (parent_storage_key, tenant_id, part_index, filename, mime_type,
                         size_bytes, content, content_id, storage_disposition)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
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


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
    return text[:MAX_TEXT_CHARS]


def _clean_headers(value: Any) -> Any:
    """JSONB cannot hold NUL characters; replace them wherever they hide."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_clean_headers(str(k)): _clean_headers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_headers(v) for v in value]
    return value


async def store_message(conn: asyncpg.Connection, record: MessageRecord) -> StoreResult:
    """Store ``record`` once (one transaction). Storing it again is a no-op."""
    key = record.storage_key
    async with conn.transaction():
        inserted = await conn.execute(
            _INSERT_CONTENT,
            key,
            record.tenant_id,
            _clip(record.text),
            _clip(record.html),
            _clean_headers(record.headers),
            record.raw,
            record.raw_size if record.raw_size is not None else len(record.raw or b""),
            record.parse_error,
        )
        if inserted.endswith(" 0"):
            if record.position is not None:
                await _advance_sync(conn, record)
            return StoreResult(key, created=False, attachment_count=0)
        await conn.execute(_INSERT_MESSAGE, *_message_args(record))
        if record.attachments:
            await conn.executemany(
                _INSERT_ATTACHMENT,
                [_attachment_args(record, i, a) for i, a in enumerate(record.attachments)],
            )
        if record.position is not None:
            await _advance_sync(conn, record)
    return StoreResult(key, created=True, attachment_count=len(record.attachments))


_INSERT_CONTENTS = """
INSERT INTO email_content (storage_key, tenant_id, content_text, content_html, headers, raw,
                           raw_size_bytes, parse_error, created)
SELECT k, t, ct, ch, h::jsonb, r, s, e, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[],
            $7::bigint[], $8::text[]) AS u(k, t, ct, ch, h, r, s, e)
ON CONFLICT (storage_key) DO NOTHING
RETURNING storage_key
"""


async def store_messages(
    conn: asyncpg.Connection, records: list[MessageRecord]
) -> list[StoreResult]:
    """Store several records in ONE transaction with a handful of statements whatever their
    number (one ``unnest`` insert of the contents, then pipelined inserts of the rest):
    the same outcome as :func:`store_message` for each, in order. A record whose storage key
    is already stored, or repeats an earlier record of ``records``, is a no-op (``created``
    False) that still moves its mailbox position. The caller orders positions: each mailbox
    folder's sync state moves to the highest UID among ``records``."""
    if not records:
        return []
    keys = [r.storage_key for r in records]
    firsts = {key: i for i, key in reversed(list(enumerate(keys)))}
    fresh = [r for i, r in enumerate(records) if firsts[keys[i]] == i]
    async with conn.transaction():
        rows = await conn.fetch(
            _INSERT_CONTENTS,
            [r.storage_key for r in fresh],
            [r.tenant_id for r in fresh],
            [_clip(r.text) for r in fresh],
            [_clip(r.html) for r in fresh],
            [json.dumps(_clean_headers(r.headers)) for r in fresh],
            [r.raw for r in fresh],
            [r.raw_size if r.raw_size is not None else len(r.raw or b"") for r in fresh],
            [r.parse_error for r in fresh],
        )
        inserted = {row["storage_key"] for row in rows}
        created = [r for r in fresh if r.storage_key in inserted]
        if created:
            await conn.executemany(_INSERT_MESSAGE, [_message_args(r) for r in created])
        attachments = [
            _attachment_args(r, i, a) for r in created for i, a in enumerate(r.attachments)
        ]
        if attachments:
            await conn.executemany(_INSERT_ATTACHMENT, attachments)
        tops: dict[tuple[str, str], MessageRecord] = {}
        for r in records:
            pos = r.position
            if pos is not None:
                top = tops.get((pos.account_id, pos.folder))
                if top is None or top.position is None or top.position.uid < pos.uid:
                    tops[(pos.account_id, pos.folder)] = r
        for r in tops.values():
            await _advance_sync(conn, r)
    out: list[StoreResult] = []
    claimed: set[str] = set()
    for r, key in zip(records, keys, strict=True):
        made = key in inserted and key not in claimed
        claimed.add(key)
        out.append(
            StoreResult(key, created=made, attachment_count=len(r.attachments) if made else 0)
        )
    return out


def _message_args(record: MessageRecord) -> tuple[Any, ...]:
    pos = record.position
    return (
        record.storage_key,
        record.tenant_id,
        record.email_account_id,
        record.direction,
        record.message_type,
        _clip(record.from_email),
        _clip(",".join(record.to_emails)),
        _clip(record.subject),
        record.status,
        _clip(record.message_id),
        _clip(record.in_reply_to),
        [r.replace("\x00", "") for r in record.references],
        record.delivery_id,
        record.source,
        pos.folder if pos else None,
        pos.uidvalidity if pos else None,
        pos.uid if pos else None,
        record.dedupe_key,
    )


def _attachment_args(record: MessageRecord, index: int, a: AttachmentRecord) -> tuple[Any, ...]:
    return (
        record.storage_key,
        record.tenant_id,
        index,
        _clip(a.filename),
        a.mime_type,
        a.size,
        a.content,
        _clip(a.content_id),
        "inline" if a.disposition == "inline" else "attachment",
    )


async def advance_sync(conn: asyncpg.Connection, tenant_id: str, pos: MailboxPosition) -> None:
    """Move a folder's sync position to ``pos`` (never backwards within one UIDVALIDITY)."""
    await conn.execute(
        _ADVANCE_SYNC, tenant_id, pos.account_id, pos.folder, pos.uidvalidity, pos.uid
    )


async def _advance_sync(conn: asyncpg.Connection, record: MessageRecord) -> None:
    assert record.position is not None
    await advance_sync(conn, record.tenant_id, record.position)


# -- bodies -------------------------------------------------------------------------------------

_BLOCK = re.compile(r"<\s*(br|/p|/div|/tr|/h[1-6]|/li|p|div|tr|li)\b[^>]*>", re.I)
_DROP = re.compile(r"<\s*(script|style|head)\b.*?<\s*/\s*\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANKS = re.compile(r"\n\s*\n\s*\n+")


def html_to_text(markup: str) -> str:
    """A readable plain-text rendering of HTML (tags dropped, blocks on their own lines)."""
    text = _DROP.sub("", markup)
    text = _BLOCK.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def text_to_html(text: str) -> str:
    """Plain text as minimal, escaped HTML (line breaks kept)."""
    escaped = html.escape(text)
    return "<div>" + escaped.replace("\r\n", "\n").replace("\n", "<br>\n") + "</div>"
