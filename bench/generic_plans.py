"""Generic plans of the hot statements (prepared statements): each batched or per-message
statement of the hot paths, run through asyncpg on one connection with realistic
parameters, under ``plan_cache_mode = force_custom_plan`` and ``force_generic_plan``
(what PostgreSQL runs after the fifth execution when the generic plan looks no costlier),
and 10 times in the default mode (executions 1-5 against 6-10).

    python bench/generic_plans.py [--load [--tenants 3] [--scale 1] [--no-analyze]] [--runs 5]

PostgreSQL is MAILGATE_DATABASE_URL, else a private embedded server (migrated and loaded at
once). ``--load`` fills an already migrated database: 600k email_deliveries, 300k contacts,
email_messages, ingest_fingerprints and events, 86k suppressions, 20k list members (times
``--scale``) over ``--tenants`` tenants (3: 60/30/10 %), then ANALYZE (about a minute), or
no statistics at all with ``--no-analyze``. bench/README.md, "Generic plans (prepared
statements) audit", has the figures. Writes run in a transaction rolled back. The last line is a
JSON object: per statement, milliseconds (median) custom, generic, auto 1-5, auto 6-10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import fanout
from delivery import store as dstore
from gateway import events, guards, messages
from gateway.jobs import tracking
from gateway.storage import migrate
from ingest import store as istore
from webhooks import dispatch
from webhooks import store as wstore

_SKEWED = "(CASE WHEN g % 10 < 6 THEN 't0' WHEN g % 10 < 9 THEN 't1' ELSE 't2' END)"


def _tenant_sql(tenants: int) -> str:
    return _SKEWED if tenants == 3 else f"('t' || (g % {tenants}))"


def _is_t0(g: int, tenants: int) -> bool:
    return g % 10 < 6 if tenants == 3 else g % tenants == 0


_TABLES = (
    "email_deliveries, contacts, email_content, email_messages, email_accounts, "
    "ingest_fingerprints, events, suppressions, webhook_endpoints, webhook_deliveries, "
    "contact_list_members, jobs"
)


def load_sql(tenants: int, analyze: bool, scale: float = 1.0) -> str:
    """The rows; then ANALYZE, or (``analyze`` False) no statistics at all: autovacuum off
    on these tables, the state of a table filled faster than autovacuum's next pass (the
    bench/webhooks.py condition of the round-to-round decay)."""
    before = (
        ""
        if analyze
        else "".join(
            f"ALTER TABLE {t} SET (autovacuum_enabled = false);\n" for t in _TABLES.split(", ")
        )
    )
    return before + _rows_sql(tenants, scale) + (f"ANALYZE {_TABLES};\n" if analyze else "")


def _rows_sql(tenants: int, scale: float) -> str:
    _T = _tenant_sql(tenants)
    big, half = int(600000 * scale), int(300000 * scale)
    return f"""
INSERT INTO email_deliveries (id, tenant_id, campaign_id, recipient_id, recipient_email,
    email_account_id, job_id, idempotency_key, message_id, status, sent_at, created_at)
SELECT 'd' || g, {_T}, 'c' || (g % 50), 'r' || g, 'u' || g || '@ex' || (g % 100) || '.com',
    'a' || (g % 5), 'j' || g, 'k' || g, '<m' || g || '@mailgate>',
    (ARRAY['sent','sent','sent','failed','bounced','queued'])[1 + g % 6],
    now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval
FROM generate_series(1, {big}) g;
INSERT INTO contacts (id, tenant_id, email, name)
SELECT 'ct' || g, {_T}, 'u' || g || '@ex.com', 'n' || g FROM generate_series(1, {half}) g;
INSERT INTO email_content (storage_key, tenant_id)
SELECT 's' || g, {_T} FROM generate_series(1, {half}) g;
INSERT INTO email_messages (storage_key, tenant_id, email_account_id, direction, message_id,
    dedupe_key, created_at)
SELECT 's' || g, {_T}, 'a' || (g % 5), 'inbound', '<in' || g || '@x>', 'job:' || g,
    now() - (g || ' seconds')::interval
FROM generate_series(1, {half}) g;
INSERT INTO email_accounts (id, tenant_id, address)
SELECT 'a' || g, 't0', 'a' || g || '@x' FROM generate_series(0, 4) g;
INSERT INTO ingest_fingerprints (tenant_id, account_id, folder, fingerprint, storage_key)
SELECT {_T}, 'a' || (g % 5), 'INBOX', sha256(g::text::bytea), 's' || g
FROM generate_series(1, {half}) g;
INSERT INTO events (tenant_id, type, subject_id, dedupe_key, dispatched_at)
SELECT {_T}, 'email.sent', 'd' || g, 'e' || g, now() FROM generate_series(1, {half}) g;
INSERT INTO suppressions (tenant_id, email, reason)
SELECT 't0', 'u' || g || '@ex' || (g % 100) || '.com', 'manual'
FROM generate_series(1, {big}, 7) g;
INSERT INTO webhook_endpoints (id, tenant_id, url, event_types)
SELECT 'w' || g, 't' || g, 'https://hooks.example/' || g, '{{*}}'
FROM generate_series(0, {tenants - 1}) g;
INSERT INTO webhook_deliveries (tenant_id, event_id, endpoint_id, attempts, status)
SELECT tenant_id, id, 'w' || substr(tenant_id, 2), 1, 'delivered' FROM events WHERE id % 2 = 0;
INSERT INTO jobs (id, tenant_id, queue_name, status, attempt_count, completed_at)
SELECT 'j' || g, {_T}, 'queue:email-sending', 'completed', 1, now() - (g || ' seconds')::interval
FROM generate_series(1, {half}) g;
INSERT INTO contact_list_members (tenant_id, list_id, contact_id)
SELECT tenant_id, 'l-' || tenant_id, id FROM contacts WHERE substr(id, 3)::int % 15 = 0;
"""  # noqa: S608 (constants of ours)


N = 100  # a batch
# Rows of tenant t0 (g % 10 < 6); deliveries still 'queued' (g % 6 == 5) for the record.
T0: list[int] = []
QUEUED: list[int] = []


def pick(tenants: int, scale: float = 1.0) -> None:
    """The batch's rows: of tenant t0; deliveries still 'queued' (g % 6 == 5) for the record."""
    rows = range(1, int(300000 * scale))
    T0[:] = [g for g in rows if _is_t0(g, tenants)][:N]
    QUEUED[:] = [g for g in rows if _is_t0(g, tenants) and g % 6 == 5][:N]


def _fp(g: int) -> bytes:
    import hashlib

    return hashlib.sha256(str(g).encode()).digest()


# The handler's read before f496110 (its generic plan joined events on tenant_id): the
# control that this measurement sees the trap.
_WORK_BEFORE = """
SELECT v.i, e.id AS event_id, e.type, e.subject_id, e.payload, e.created_at,
       w.id AS endpoint_id, w.tenant_id, w.url, w.secrets_enc, w.event_types, w.enabled,
       w.concurrency, w.failing_since, w.disabled_reason,
       d.status AS delivery_status, d.attempts
FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY
    AS v(tenant_id, event_id, endpoint_id, i)
JOIN events e ON e.tenant_id = v.tenant_id AND e.id = v.event_id
JOIN webhook_endpoints w ON w.tenant_id = v.tenant_id AND w.id = v.endpoint_id
LEFT JOIN webhook_deliveries d ON d.event_id = e.id AND d.endpoint_id = w.id
"""

# name -> (statement, args, write?)
CASES: dict[str, tuple[str, Callable[[], tuple[Any, ...]], bool]] = {
    "delivery._CONTACTS (by id)": (
        dstore._CONTACTS,
        lambda: (["t0"] * N, [f"ct{g}" for g in T0], [f"u{g}@ex.com" for g in T0]),
        False,
    ),
    "delivery._CONTACTS (by email)": (
        dstore._CONTACTS,
        lambda: (["t0"] * N, [None] * N, [f"U{g}@ex.com" for g in T0]),
        False,
    ),
    "delivery._CLAIM": (
        dstore._CLAIM,
        lambda: (
            [f"new{g}" for g in T0],
            ["t0"] * N,
            [f"newk{g}" for g in T0],
            ["c1"] * N,
            [None] * N,
            [f"u{g}@ex{g % 100}.com" for g in T0],
            ["a1"] * N,
            ["j1"] * N,
            [False] * N,
            300.0,
        ),
        True,
    ),
    "delivery._FINAL_ROWS": (
        dstore._FINAL_ROWS,
        lambda: (["t0"] * N, [f"d{g}" for g in T0]),
        False,
    ),
    "delivery._RECORD": (
        dstore._RECORD,
        lambda: (
            ["t0"] * N,
            [f"d{g}" for g in QUEUED],
            ["sent"] * N,
            [f"<x{g}@m>" for g in QUEUED],
            [250] * N,
            ["2.0.0"] * N,
            ["ok"] * N,
            [None] * N,
            [None] * N,
            ["p"] * N,
        ),
        True,
    ),
    "ingest._FIND_FINGERPRINTS": (
        istore._FIND_FINGERPRINTS,
        lambda: (
            ["t0"] * N,
            [f"a{g % 5}" for g in T0],
            ["INBOX"] * N,
            [_fp(g) for g in T0],
        ),
        False,
    ),
    "ingest._MARK_ROUTED": (
        istore._MARK_ROUTED,
        lambda: (["t0"] * N, [f"s{g}" for g in T0]),
        True,
    ),
    "ingest.routing.find_delivery": (
        "SELECT id, campaign_id FROM email_deliveries "
        "WHERE tenant_id = $1 AND message_id = ANY($2) "
        "ORDER BY sent_at DESC NULLS LAST LIMIT 1",
        lambda: ("t0", ["<m1000@mailgate>", "<m1006@mailgate>"]),
        False,
    ),
    "bounces.intake tenants (id = ANY)": (
        "SELECT id, tenant_id FROM email_deliveries WHERE id = ANY($1::text[])",
        lambda: ([f"d{g}" for g in T0],),
        False,
    ),
    "bounces.processing verp (tenant, id = ANY)": (
        "SELECT id, tenant_id, campaign_id, recipient_email, message_id, email_account_id"
        " FROM email_deliveries WHERE tenant_id = $1 AND id = ANY($2::text[])",
        lambda: ("t0", [f"d{g}" for g in T0[:3]]),
        False,
    ),
    "bounces.processing by Message-ID": (
        "SELECT id, tenant_id, campaign_id, recipient_email, message_id, email_account_id"
        " FROM email_deliveries"
        " WHERE message_id = ANY($1::text[]) AND ($2::text IS NULL OR tenant_id = $2)"
        " LIMIT 2",
        lambda: (["m1000@mailgate", "<m1000@mailgate>"], "t0"),
        False,
    ),
    "gateway.events._INSERT_EVENTS": (
        events._INSERT_EVENTS,
        lambda: (
            ["t0"] * N,
            ["email.sent"] * N,
            [f"d{g}" for g in T0],
            ["{}"] * N,
            [f"new{g}" for g in T0],
        ),
        True,
    ),
    "gateway.messages._INSERT_CONTENTS": (
        messages._INSERT_CONTENTS,
        lambda: (
            [f"news{g}" for g in T0],
            ["t0"] * N,
            ["x"] * N,
            [None] * N,
            ["{}"] * N,
            [b"raw"] * N,
            [3] * N,
            [None] * N,
        ),
        True,
    ),
    "gateway.jobs.tracking.INSERT_EXECUTIONS": (
        tracking.INSERT_EXECUTIONS,
        lambda: (
            [f"j{g}" for g in T0],
            ["t0"] * N,
            [1] * N,
            ["success"] * N,
            [None] * N,
            [1.0] * N,
            ["w"] * N,
        ),
        True,
    ),
    "gateway.jobs.tracking.UPSERT_JOBS (100 existing)": (
        tracking.UPSERT_JOBS,
        lambda: (
            [f"j{g}" for g in T0],
            ["t0"] * N,
            ["queue:email-sending"] * N,
            ["running"] * N,
            ["{}"] * N,
            [2] * N,
            [5] * N,
            ["w"] * N,
            [None] * N,
            [None] * N,
            [None] * N,
            [None] * N,
            [None] * N,
            [None] * N,
        ),
        True,
    ),
    "webhooks.store._SUCCESSES (100)": (
        wstore._SUCCESSES,
        lambda: (
            ["t0"] * N,
            list(T0),
            ["w0"] * N,
            [200] * N,
            [1] * N,
            [5.0] * N,
            [f"msg_{g}" for g in T0],
            [None] * N,
        ),
        True,
    ),
    "gateway.guards._WINDOW (account)": (
        guards._WINDOW_SQL["account"],
        lambda: ("t0", "a1", None, 100, 1000, ["sent", "bounced", "complained", "failed"]),
        False,
    ),
    "webhooks.dispatch._CURSOR": (
        dispatch._CURSOR,
        lambda: (["t0", "t1"], [1000, 2000]),
        True,
    ),
    "webhooks.dispatch mark dispatched": (
        "UPDATE events SET dispatched_at = now() WHERE id = ANY($1::bigint[])",
        lambda: (list(T0),),
        True,
    ),
    "webhooks.store._WORK before f496110 (control)": (
        _WORK_BEFORE,
        lambda: (["t0"] * N, list(T0), ["w0"] * N),
        False,
    ),
    "campaigns.fanout._MEMBERS (whole list)": (
        fanout._MEMBERS,
        lambda: ("t0", "l-t0", ""),
        False,
    ),
    "campaigns.fanout._PROGRESS": (
        fanout._PROGRESS,
        lambda: ("t0", "c10", list(fanout.FINAL_STATUSES)),
        False,
    ),
    "webhooks.store._WORK": (
        wstore._WORK,
        lambda: (["t0"] * N, list(T0), ["w0"] * N),
        False,
    ),
}


async def _once(
    conn: asyncpg.Connection, stmt: asyncpg.PreparedStatement, args: Any, write: bool
) -> float:
    tr = conn.transaction() if write else None
    if tr is not None:
        await tr.start()
    t0 = time.perf_counter()
    await stmt.fetch(*args)
    elapsed = (time.perf_counter() - t0) * 1000
    if tr is not None:
        await tr.rollback()
    return elapsed


_GENERIC_PLAN = """
CREATE FUNCTION pg_temp.generic_plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN RETURN QUERY EXECUTE 'EXPLAIN (GENERIC_PLAN, COSTS OFF) ' || q; END $$
"""
_SCAN = re.compile(
    r"((?:Parallel )?(?:Seq Scan|Bitmap Heap Scan) on \w+|Index (?:Only )?Scan "
    r"(?:Backward )?using \w+|Bitmap Index Scan on \w+)"
)


def _custom_scans(node: dict[str, Any], out: list[str]) -> list[str]:
    kind = node.get("Node Type", "")
    if kind in ("Seq Scan", "Bitmap Heap Scan"):
        out.append(f"{kind} on {node['Relation Name']}")
    elif kind in ("Index Scan", "Index Only Scan"):
        back = "Backward " if node.get("Scan Direction") == "Backward" else ""
        out.append(f"{kind} {back}using {node['Index Name']}")
    elif kind == "Bitmap Index Scan":
        out.append(f"{kind} on {node['Index Name']}")
    for child in node.get("Plans", []):
        _custom_scans(child, out)
    return out


async def plans(conn: asyncpg.Connection, sql: str, args: Any) -> tuple[list[str], list[str]]:
    """The scans of the custom plan (these parameters) and of the generic plan."""
    custom = _custom_scans((await (await conn.prepare(sql)).explain(*args))[0]["Plan"], [])
    text = [r[0] for r in await conn.fetch("SELECT pg_temp.generic_plan($1)", sql)]
    generic = [m.group(1) for line in text for m in [_SCAN.search(line)] if m]
    return sorted(custom), sorted(generic)


async def measure(url: str, runs: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (sql, make, write) in CASES.items():
        args = make()
        row: dict[str, Any] = {}
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f"SET plan_cache_mode = {mode}")
                stmt = await conn.prepare(sql)
                times = [await _once(conn, stmt, args, write) for _ in range(runs)]
                row[mode.split("_")[1]] = round(statistics.median(times), 2)
            finally:
                await conn.close()
        conn = await asyncpg.connect(url)
        try:
            stmt = await conn.prepare(sql)
            times = [await _once(conn, stmt, args, write) for _ in range(10)]
            row["auto_1_5"] = round(statistics.median(times[:5]), 2)
            row["auto_6_10"] = round(statistics.median(times[5:]), 2)
            await conn.execute(_GENERIC_PLAN)
            custom, generic = await plans(conn, sql, args)
            row["same_scans"] = custom == generic
            if custom != generic:
                row["custom_scans"], row["generic_scans"] = custom, generic
        finally:
            await conn.close()
        out[name] = row
        print(
            f"{name:48} custom {row['custom']:8.2f} ms  generic {row['generic']:8.2f} ms  "
            f"auto 1-5 {row['auto_1_5']:8.2f}  6-10 {row['auto_6_10']:8.2f}  "
            + (
                "same scans"
                if row["same_scans"]
                else f"custom {row['custom_scans']} generic {row['generic_scans']}"
            ),
            flush=True,
        )
    return out


async def load(url: str, tenants: int, analyze: bool, scale: float) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(load_sql(tenants, analyze, scale))
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", action="store_true", help="load MAILGATE_DATABASE_URL first")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="with --load: row counts x")
    parser.add_argument(
        "--no-analyze", action="store_true", help="with --load: no statistics (autovacuum off)"
    )
    parser.add_argument(
        "--tenants", type=int, default=3, help="3: skewed 60/30/10 %%; else uniform"
    )
    ns = parser.parse_args()
    url = os.environ.get("MAILGATE_DATABASE_URL")
    server = None
    if url is None:
        from gateway.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="mailgate-plans-")))
        url = server.start(timeout_s=60)

        async def prepare() -> None:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(prepare())
        ns.load = True
    try:
        if ns.load:
            asyncio.run(load(url, ns.tenants, not ns.no_analyze, ns.scale))
        pick(ns.tenants, ns.scale)
        result = asyncio.run(measure(url, ns.runs))
    finally:
        if server is not None:
            server.stop(force=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
