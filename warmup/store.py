"""PostgreSQL for warmup: configs, the pool, ``warmup_messages``. Every query names the
tenant (the network pool's listing names the pool instead: it spans tenants on purpose).

The quota is kept here, not in memory: a sender's plan for a day is written under a row
lock on its ``warmup_configs`` row (:func:`lock_config`), counting the rows already planned
for that day, so several instances, a CLI tick and a restart together never plan more than
the day's quota. Each step's action is recorded with its time and only while not yet
recorded (``... WHERE x_at IS NULL``): a retried step repeats nothing it finished.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from warmup.plan import Member, Ramp, Window

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


@dataclass(frozen=True)
class Config:
    """One warmup account: its config row and what the pool needs of its account."""

    tenant_id: str
    account_id: str
    address: str
    host: str
    enabled: bool
    paused_at: dt.datetime | None
    ramp: Ramp
    window: Window
    reply_rate: float
    pool: str
    has_imap: bool = True

    @property
    def member(self) -> Member:
        return Member(self.account_id, self.tenant_id, self.host, self.reply_rate, self.address)

    @property
    def active(self) -> bool:
        return self.enabled and self.paused_at is None


_CONFIG = """
SELECT c.tenant_id, c.email_account_id, a.address,
       lower(coalesce(a.imap_host, split_part(a.address, '@', 2))) AS host,
       c.enabled AND a.enabled AS enabled, c.paused_at, c.daily_start, c.daily_increment,
       c.daily_max, c.started_on, c.weekdays_only, c.window_start_hour, c.window_end_hour,
       c.time_zone, c.reply_rate, c.pool,
       a.imap_host IS NOT NULL AND a.imap_password_enc IS NOT NULL AS has_imap
FROM warmup_configs c
JOIN email_accounts a ON a.tenant_id = c.tenant_id AND a.id = c.email_account_id
"""


def _config(r: asyncpg.Record) -> Config:
    return Config(
        tenant_id=r["tenant_id"],
        account_id=r["email_account_id"],
        address=r["address"],
        host=r["host"],
        enabled=r["enabled"],
        paused_at=r["paused_at"],
        ramp=Ramp(
            r["daily_start"],
            r["daily_increment"],
            r["daily_max"],
            r["started_on"],
            r["weekdays_only"],
        ),
        window=Window(r["window_start_hour"], r["window_end_hour"], r["time_zone"]),
        reply_rate=float(r["reply_rate"]),
        pool=r["pool"],
        has_imap=r["has_imap"],
    )


async def configs(db: Db, tenant_id: str | None = None) -> list[Config]:
    """Every warmup config (one tenant's, or all for the planner), enabled or not."""
    rows = await db.fetch(
        _CONFIG + " WHERE ($1::text IS NULL OR c.tenant_id = $1) ORDER BY c.tenant_id, a.address",
        tenant_id,
    )
    return [_config(r) for r in rows]


async def config(db: Db, tenant_id: str, account_id: str) -> Config | None:
    row = await db.fetchrow(
        _CONFIG + " WHERE c.tenant_id = $1 AND c.email_account_id = $2", tenant_id, account_id
    )
    return _config(row) if row is not None else None


async def lock_config(conn: asyncpg.Connection, tenant_id: str, account_id: str) -> bool:
    """Lock the sender's config row for this transaction; False if it is not active."""
    active: bool | None = await conn.fetchval(
        "SELECT enabled AND paused_at IS NULL FROM warmup_configs "
        "WHERE tenant_id = $1 AND email_account_id = $2 FOR UPDATE",
        tenant_id,
        account_id,
    )
    return bool(active)


async def pool_of(db: Db, sender: Config) -> list[Config]:
    """The active accounts the sender may write to: its tenant's (pool ``tenant``) or
    every account that opted into the network (pool ``network``, the sender included);
    only accounts with an IMAP login (a receiver must be able to look for the mail)."""
    if sender.pool == "network":
        rows = await db.fetch(_CONFIG + " WHERE c.pool = 'network'")
    else:
        rows = await db.fetch(_CONFIG + " WHERE c.tenant_id = $1", sender.tenant_id)
    return [c for c in map(_config, rows) if c.active and c.has_imap]


async def planned_on(conn: Db, tenant_id: str, account_id: str, day: dt.date) -> int:
    """New conversations planned by the sender for ``day`` (what the quota counts)."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM warmup_messages "
        "WHERE tenant_id = $1 AND from_account_id = $2 AND quota_day = $3 AND depth = 0",
        tenant_id,
        account_id,
        day,
    )
    return n


async def last_receiver(conn: Db, tenant_id: str, account_id: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT to_account_id FROM warmup_messages WHERE tenant_id = $1 "
        "AND from_account_id = $2 AND depth = 0 ORDER BY planned_at DESC, id DESC LIMIT 1",
        tenant_id,
        account_id,
    )
    return value


@dataclass(frozen=True)
class Thread:
    """The latest reply a sender got from a partner, not yet continued."""

    message_id: str
    references: str | None
    subject: str


MAX_THREAD = 8  # messages in a References chain before a thread is left to rest


async def threads_to_continue(
    conn: Db, tenant_id: str, account_id: str
) -> dict[tuple[str, str], Thread]:
    """By partner (tenant, account): the latest sent reply the account received from it
    that no message of the account continues yet, while the thread is short."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (r.tenant_id, r.from_account_id) r.tenant_id,
                  r.from_account_id, r.message_id, r."references", r.subject
           FROM warmup_messages r
           WHERE r.to_tenant_id = $1 AND r.to_account_id = $2 AND r.depth = 1
             AND r.sent_at IS NOT NULL
             AND coalesce(array_length(string_to_array(r."references", ' '), 1), 0) < $3
             AND NOT EXISTS (SELECT 1 FROM warmup_messages c WHERE c.tenant_id = $1
                             AND c.from_account_id = $2 AND c.in_reply_to = r.message_id)
           ORDER BY r.tenant_id, r.from_account_id, r.sent_at DESC""",
        tenant_id,
        account_id,
        MAX_THREAD,
    )
    return {
        (r["tenant_id"], r["from_account_id"]): Thread(
            r["message_id"], r["references"], r["subject"]
        )
        for r in rows
    }


def new_row_id() -> str:
    return "wm_" + secrets.token_hex(8)


@dataclass(frozen=True)
class Row:
    """A ``warmup_messages`` row with both addresses."""

    id: str
    tenant_id: str
    from_account_id: str
    from_address: str
    to_tenant_id: str
    to_account_id: str
    to_address: str
    message_id: str
    parent_id: str | None
    depth: int
    quota_day: dt.date
    subject: str
    in_reply_to: str | None
    references: str | None
    reply_planned: bool
    sent_at: dt.datetime | None
    send_claimed_at: dt.datetime | None
    found_at: dt.datetime | None
    folder_found: str | None
    missing_at: dt.datetime | None
    moved_to_inbox_at: dt.datetime | None
    read_at: dt.datetime | None
    flagged_at: dt.datetime | None
    replied_at: dt.datetime | None
    reply_message_id: str | None


_ROW = """
SELECT m.id, m.tenant_id, m.from_account_id, fa.address AS from_address, m.to_tenant_id,
       m.to_account_id, ta.address AS to_address, m.message_id, m.parent_id, m.depth,
       m.quota_day, m.subject, m.in_reply_to, m."references", m.reply_planned, m.sent_at,
       m.send_claimed_at, m.found_at, m.folder_found, m.missing_at, m.moved_to_inbox_at,
       m.read_at, m.flagged_at, m.replied_at, m.reply_message_id
FROM warmup_messages m
JOIN email_accounts fa ON fa.tenant_id = m.tenant_id AND fa.id = m.from_account_id
JOIN email_accounts ta ON ta.tenant_id = m.to_tenant_id AND ta.id = m.to_account_id
"""


def _row(r: asyncpg.Record) -> Row:
    return Row(**dict(r))


async def row(db: Db, tenant_id: str, row_id: str) -> Row | None:
    found = await db.fetchrow(_ROW + " WHERE m.tenant_id = $1 AND m.id = $2", tenant_id, row_id)
    return _row(found) if found is not None else None


async def rows_waiting(db: Db, to_tenant_id: str, to_account_id: str, step: str) -> list[Row]:
    """A receiver's messages still waiting for an inbound (or engagement) step."""
    cond = (
        "m.found_at IS NULL AND m.missing_at IS NULL"
        if step == "inbound"
        else "m.found_at IS NOT NULL AND m.read_at IS NULL"
    )
    rows = await db.fetch(
        _ROW + f" WHERE m.to_tenant_id = $1 AND m.to_account_id = $2 AND m.sent_at IS NOT NULL "
        f"AND {cond} ORDER BY m.sent_at LIMIT 200",
        to_tenant_id,
        to_account_id,
    )
    return [_row(r) for r in rows]


_INSERT = """
INSERT INTO warmup_messages (id, tenant_id, from_account_id, to_tenant_id, to_account_id,
    message_id, parent_id, depth, quota_day, subject, in_reply_to, "references",
    reply_planned)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING RETURNING id
"""


async def insert(
    conn: Db,
    *,
    row_id: str,
    tenant_id: str,
    from_account_id: str,
    to: Member,
    message_id: str,
    quota_day: dt.date,
    subject: str,
    parent_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    reply_planned: bool = False,
) -> bool:
    """Add a planned message; False when it exists (a reply already made for the parent)."""
    made = await conn.fetchval(
        _INSERT,
        row_id,
        tenant_id,
        from_account_id,
        to.tenant_id,
        to.account_id,
        message_id,
        parent_id,
        1 if parent_id else 0,
        quota_day,
        subject,
        in_reply_to,
        references,
        reply_planned,
    )
    return made is not None


async def insert_many(conn: Db, values: Sequence[tuple[object, ...]]) -> None:
    """Add planned rows in one round trip (``values`` in the column order of ``_INSERT``)."""
    if values:
        await conn.executemany(_INSERT, values)


async def planned_counts(
    db: Db, tenant_id: str | None, since: dt.date
) -> dict[tuple[str, str, dt.date], int]:
    """New conversations planned per (tenant, sender, day) since ``since``: one query for a
    whole tick, so a sender at its quota costs no transaction."""
    rows = await db.fetch(
        "SELECT tenant_id, from_account_id, quota_day, count(*) AS n FROM warmup_messages "
        "WHERE ($1::text IS NULL OR tenant_id = $1) AND quota_day >= $2 AND depth = 0 "
        "GROUP BY 1, 2, 3",
        tenant_id,
        since,
    )
    return {(r["tenant_id"], r["from_account_id"], r["quota_day"]): r["n"] for r in rows}


async def reply_of(db: Db, tenant_id: str, parent_id: str) -> Row | None:
    """The reply row made for a parent; ``tenant_id`` is the reply's (its sender is the
    parent's receiver)."""
    found = await db.fetchrow(
        _ROW + " WHERE m.tenant_id = $1 AND m.parent_id = $2", tenant_id, parent_id
    )
    return _row(found) if found is not None else None


async def claim_send(db: Db, tenant_id: str, row_id: str, lease_s: float) -> bool | None:
    """Take the send of a row: only when unsent and not claimed within ``lease_s`` (another
    run may be mid-transaction). None: not taken; True: taken over from a run whose claim
    lapsed without a result (it may have sent); False: a first claim."""
    got: bool | None = await db.fetchval(
        """UPDATE warmup_messages m SET send_claimed_at = now()
           FROM (SELECT id, send_claimed_at AS prev FROM warmup_messages
                 WHERE tenant_id = $1 AND id = $2 FOR UPDATE) p
           WHERE m.id = p.id AND m.sent_at IS NULL
             AND (p.prev IS NULL OR p.prev < now() - make_interval(secs => $3))
           RETURNING p.prev IS NOT NULL""",
        tenant_id,
        row_id,
        lease_s,
    )
    return got


async def release_send(db: Db, tenant_id: str, row_id: str, error: str) -> None:
    """Nothing was sent: free the claim for the retry, keep the reason."""
    await db.execute(
        "UPDATE warmup_messages SET send_claimed_at = NULL, send_error = $3 "
        "WHERE tenant_id = $1 AND id = $2 AND sent_at IS NULL",
        tenant_id,
        row_id,
        error[:500],
    )


async def mark(db: Db, tenant_id: str, row_id: str, column: str, **values: Any) -> bool:
    """Set ``column`` to now() (and ``values``) once; True if this call set it."""
    if column not in _TIMESTAMPS:
        raise ValueError(f"not a warmup_messages timestamp: {column}")
    names = [n for n in values if n in _VALUES]
    sets = "".join(f", {n} = ${i}" for i, n in enumerate(names, start=3))
    got = await db.fetchval(
        f"UPDATE warmup_messages SET {column} = now(){sets} "  # noqa: S608 - checked names
        f"WHERE tenant_id = $1 AND id = $2 AND {column} IS NULL RETURNING id",
        tenant_id,
        row_id,
        *(values[n] for n in names),
    )
    return got is not None


_TIMESTAMPS = frozenset(
    {
        "sent_at",
        "found_at",
        "missing_at",
        "moved_to_inbox_at",
        "read_at",
        "flagged_at",
        "replied_at",
    }
)
_VALUES = frozenset({"folder_found", "reply_message_id", "send_error"})


async def pause(db: Db, tenant_id: str, account_id: str, reason: str) -> bool:
    """Pause an account's warmup (a hard bounce or complaint); True if it was running."""
    got = await db.fetchval(
        "UPDATE warmup_configs SET paused_at = now(), paused_reason = $3, updated_at = now() "
        "WHERE tenant_id = $1 AND email_account_id = $2 AND paused_at IS NULL RETURNING id",
        tenant_id,
        account_id,
        reason[:500],
    )
    return got is not None


@dataclass(frozen=True)
class DayFigures:
    """One account's warmup on one day (the sender's view; placement of its own mail)."""

    sent: int
    inbox: int
    spam: int
    other: int
    missing: int
    moved_to_inbox: int
    replied: int


async def day_figures(db: Db, tenant_id: str, account_id: str, day: dt.date) -> DayFigures:
    r = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE sent_at IS NOT NULL AND depth = 0) AS sent,
                  count(*) FILTER (WHERE folder_found = 'inbox') AS inbox,
                  count(*) FILTER (WHERE folder_found = 'spam') AS spam,
                  count(*) FILTER (WHERE folder_found = 'other') AS other,
                  count(*) FILTER (WHERE missing_at IS NOT NULL) AS missing,
                  count(*) FILTER (WHERE moved_to_inbox_at IS NOT NULL) AS moved,
                  count(*) FILTER (WHERE replied_at IS NOT NULL) AS replied
           FROM warmup_messages
           WHERE tenant_id = $1 AND from_account_id = $2 AND quota_day = $3""",
        tenant_id,
        account_id,
        day,
    )
    assert r is not None
    return DayFigures(
        r["sent"], r["inbox"], r["spam"], r["other"], r["missing"], r["moved"], r["replied"]
    )


async def placement(db: Db, tenant_id: str, account_id: str, since: dt.date) -> tuple[int, int]:
    """(found in INBOX, found or missing) of the account's mail since ``since``."""
    r = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE folder_found = 'inbox') AS inbox,
                  count(*) FILTER (WHERE folder_found IS NOT NULL OR missing_at IS NOT NULL)
                      AS judged
           FROM warmup_messages WHERE tenant_id = $1 AND from_account_id = $2
             AND quota_day >= $3""",
        tenant_id,
        account_id,
        since,
    )
    assert r is not None
    return int(r["inbox"]), int(r["judged"])


async def placement_by_day(db: Db, tenant_id: str | None, since: dt.date) -> list[dict[str, Any]]:
    """Inbox placement per account per day (the sender's mail), for the API."""
    rows = await db.fetch(
        """SELECT tenant_id, from_account_id AS account, quota_day AS day,
                  count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
                  count(*) FILTER (WHERE folder_found = 'inbox') AS inbox,
                  count(*) FILTER (WHERE folder_found = 'spam') AS spam,
                  count(*) FILTER (WHERE folder_found = 'other') AS other,
                  count(*) FILTER (WHERE missing_at IS NOT NULL) AS missing
           FROM warmup_messages WHERE ($1::text IS NULL OR tenant_id = $1) AND quota_day >= $2
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        tenant_id,
        since,
    )
    out = []
    for r in rows:
        item = dict(r)
        judged = item["inbox"] + item["spam"] + item["other"] + item["missing"]
        item["placement_pct"] = round(100.0 * item["inbox"] / judged, 1) if judged else None
        out.append(item)
    return out


async def account_login_row(db: Db, tenant_id: str, account_id: str) -> asyncpg.Record | None:
    """The IMAP endpoint columns of an account (password still sealed)."""
    return await db.fetchrow(
        "SELECT address, imap_host, imap_port, imap_security, imap_username, "
        "imap_password_enc, imap_master_user FROM email_accounts "
        "WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        account_id,
    )


def ids(rows: Sequence[Row]) -> list[str]:
    return [r.id for r in rows]
