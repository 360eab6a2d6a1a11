"""Warmup's planner and steps against real PostgreSQL, Redis, Dovecot (LMTP + Sieve) and
Postfix: the ramp over simulated days, concurrent ticks, a worker killed after the reply's
SMTP transaction, a hard bounce pausing the account, and ingest's view of warmup mail."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import time
from typing import Any

import pytest

from delivery.pool import Endpoint
from delivery.reply import SmtpReply
from delivery.service import SENDER
from gateway.app import App
from gateway.imapendpoint import Endpoint as ImapEndpoint
from gateway.jobs import DeferJob
from gateway.jobs.contracts import WARMUP, WarmupPayload
from gateway.jobs.envelope import new_job, parse_job
from gateway.messages import MailboxPosition
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.warmupmark import WarmupMarker
from ingest.accounts import add_account
from ingest.store import Pending, analyse, store_batch
from tests.daemon import poll
from tests.delivery.peer import ScriptedPeer
from tests.peers.dovecot import Dovecot
from tests.peers.postfix import Postfix
from tests.warmup.conftest import DOMAINS, Box, new_box
from warmup import content, plan, store
from warmup.imap import ImapClient
from warmup.metrics import METRICS
from warmup.planner import LEASE_KEY, PlannerComponent, tick
from warmup.steps import Steps, locate

TENANT = "ts"
DAY0 = dt.date(2026, 12, 7)


async def _account(
    app: App,
    address: str,
    *,
    dovecot: Dovecot | None = None,
    password: str = "pw",  # noqa: S107 - a test mailbox's password
    smtp: tuple[str, int] | None = None,
) -> str:
    account = await add_account(
        app.db,
        CredentialBox(app.secret_key),
        tenant_id=TENANT,
        address=address,
        # Without a Dovecot: an IMAP login nobody uses, on a host of the address's domain.
        imap_host=dovecot.host if dovecot else "imap." + address.partition("@")[2],
        imap_port=dovecot.port if dovecot else 993,
        imap_security="none",
        password=password,
        smtp_host=smtp[0] if smtp else "127.0.0.1",
        smtp_port=smtp[1] if smtp else 25,
        smtp_security="none",
    )
    if account is not None:
        return account.id
    raise AssertionError("an account with an IMAP login was expected")


async def _enable(app: App, account: str, **values: Any) -> None:
    cols = {"daily_start": 1, "daily_increment": 2, "daily_max": 4, "started_on": DAY0}
    cols.update(values)
    names = ", ".join(cols)
    params = ", ".join(f"${i}" for i in range(4, len(cols) + 4))
    await app.db.execute(
        f"INSERT INTO warmup_configs (id, tenant_id, email_account_id, {names}) "  # noqa: S608
        f"VALUES ($1, $2, $3, {params})",
        f"wc_{account}",
        TENANT,
        account,
        *cols.values(),
    )


async def _planned(app: App, day: dt.date) -> dict[str, int]:
    rows = await app.db.fetch(
        "SELECT from_account_id, count(*) AS n FROM warmup_messages "
        "WHERE quota_day = $1 AND depth = 0 GROUP BY 1",
        day,
    )
    return {r["from_account_id"]: r["n"] for r in rows}


async def test_ramp_over_simulated_days_and_concurrent_ticks(app: App) -> None:
    """Day n plans min(1 + 2n, 4) per account (injected clock); five ticks at once on
    one day still plan exactly the quota; a paced tick plans only what is due; pairs never
    repeat back to back and nobody writes to itself; a disabled account and one without
    IMAP take no part."""
    ids = [await _account(app, f"r{i}@{DOMAINS[i % 2]}") for i in range(3)]
    for account in ids:
        await _enable(app, account)
    idle = await _account(app, "idle@wa.test")
    await _enable(app, idle, enabled=False)
    blind = await add_account(
        app.db, CredentialBox(app.secret_key), tenant_id=TENANT, address="blind@wb.test",
        imap_host=None, smtp_host="127.0.0.1", smtp_port=25, smtp_security="none",
    )  # fmt: skip
    assert blind is None
    blind_id = await app.db.fetchval("SELECT id FROM email_accounts WHERE address = $1",
                                     "blind@wb.test")  # fmt: skip
    await _enable(app, blind_id)
    for n, expected in enumerate((1, 3, 4, 4)):
        day = DAY0 + dt.timedelta(days=n)
        now = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        await tick(app, now=now, all_now=True, rng=random.Random(n))
        await tick(app, now=now, all_now=True, rng=random.Random(n))
        assert await _planned(app, day) == dict.fromkeys(ids, expected)
    day = DAY0 + dt.timedelta(days=5)
    now = dt.datetime.combine(day, dt.time(20), tzinfo=dt.UTC)
    await asyncio.gather(*(tick(app, now=now, all_now=True) for _ in range(5)))
    assert await _planned(app, day) == dict.fromkeys(ids, 4)
    # Paced: the default window is 08-18; at 08:00 nothing is due, at 18:00 everything.
    day = DAY0 + dt.timedelta(days=6)
    await tick(app, now=dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC))
    assert await _planned(app, day) == {}
    await tick(app, now=dt.datetime.combine(day, dt.time(13), tzinfo=dt.UTC))
    midday = await _planned(app, day)
    assert all(0 < n < 4 for n in midday.values()), midday
    await tick(app, now=dt.datetime.combine(day, dt.time(18), tzinfo=dt.UTC))
    assert await _planned(app, day) == dict.fromkeys(ids, 4)
    rows = await app.db.fetch(
        "SELECT from_account_id, to_account_id FROM warmup_messages ORDER BY planned_at, id"
    )
    assert all(r["from_account_id"] != r["to_account_id"] for r in rows)
    involved = {r["from_account_id"] for r in rows} | {r["to_account_id"] for r in rows}
    assert idle not in involved and blind_id not in involved  # disabled; no IMAP
    last: dict[str, str] = {}
    for r in rows:
        assert last.get(r["from_account_id"]) != r["to_account_id"]
        last[r["from_account_id"]] = r["to_account_id"]
    # Another host when the no-repeat rule allows: r1 (wb.test) writes only to wa.test.
    for r in rows:
        if r["from_account_id"] == ids[1]:
            assert r["to_account_id"] in (ids[0], ids[2])


async def _wait_for(dovecot: Dovecot, box: Box, message_id: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for folder in ("INBOX", "Junk"):
            out = dovecot.doveadm(
                "search", "-u", box.address, "mailbox", folder, "header", "message-id", message_id
            )
            if out.strip():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} never reached {box.address}")


async def test_killed_mid_engagement_never_replies_twice(
    app: App, services: Services, lmtp_dovecot: Dovecot, relay: Postfix
) -> None:
    """The worker dies right after the server took the reply (before it was recorded);
    the restarted step finds the reply in the sender's mailbox, records it and does not
    send it again: one reply in IMAP, one row, replied_at set once. Junk is rescued on
    the way (the receiver files everything there)."""
    app.settings = app.settings.model_copy(
        update={"warmup_flag_rate": 1.0, "warmup_send_lease_s": 0.0}
    )
    a = new_box(lmtp_dovecot, DOMAINS[0])
    b = new_box(lmtp_dovecot, DOMAINS[1], junk_all=True)
    smtp = (relay.host, relay.port)
    ida = await _account(app, a.address, dovecot=lmtp_dovecot, password=a.password, smtp=smtp)
    idb = await _account(app, b.address, dovecot=lmtp_dovecot, password=b.password, smtp=smtp)
    await _enable(app, ida, reply_rate=1.0, started_on=dt.date.today())
    await _enable(app, idb, reply_rate=1.0, started_on=dt.date.today(), daily_start=0)
    await tick(app, all_now=True)
    (row_id,) = [r["id"] for r in await app.db.fetch("SELECT id FROM warmup_messages")]
    sender = services.get(SENDER)
    steps = Steps(app, sender, services.get(METRICS))
    row = await store.row(app.db, TENANT, row_id)
    assert row is not None and row.reply_planned
    assert (await steps.outbound(row))["status"] == "sent"
    await _wait_for(lmtp_dovecot, b, row.message_id)
    row = await store.row(app.db, TENANT, row_id)
    assert row is not None
    assert (await steps.inbound(row, None))["folder"] == "spam"

    real_send = sender.pool.send
    sends: list[str] = []

    async def send_then_die(endpoint: Endpoint, frm: str, to: str, msg: bytes) -> SmtpReply:
        await real_send(endpoint, frm, to, msg)
        sends.append(to)
        raise asyncio.CancelledError  # the process is gone before anything is recorded

    sender.pool.send = send_then_die  # type: ignore[method-assign]
    row = await store.row(app.db, TENANT, row_id)
    assert row is not None
    with pytest.raises(asyncio.CancelledError):
        await steps.engagement(row)
    sender.pool.send = real_send  # type: ignore[method-assign]
    assert sends == [a.address]
    reply = await store.reply_of(app.db, TENANT, row_id)
    assert reply is not None and reply.sent_at is None
    await _wait_for(lmtp_dovecot, a, reply.message_id)

    restarted = Steps(app, sender, services.get(METRICS))
    for _ in range(2):
        row = await store.row(app.db, TENANT, row_id)
        assert row is not None
        await restarted.engagement(row)
    row = await store.row(app.db, TENANT, row_id)
    reply = await store.reply_of(app.db, TENANT, row_id)
    assert row is not None and reply is not None
    assert row.replied_at is not None and row.reply_message_id == reply.message_id
    assert reply.sent_at is not None and reply.in_reply_to == row.message_id
    assert row.moved_to_inbox_at and row.read_at and row.flagged_at
    assert sends == [a.address]  # no second SMTP transaction
    assert await app.db.fetchval("SELECT count(*) FROM warmup_messages WHERE depth = 1") == 1
    found = lmtp_dovecot.doveadm(
        "search", "-u", a.address, "mailbox", "INBOX", "header", "message-id", reply.message_id
    )
    assert len(found.split()) == 2  # exactly one message
    assert lmtp_dovecot.status(b.address, "Junk").get("messages", 0) == 0


async def test_hard_bounce_pauses_the_account(app: App, services: Services) -> None:
    """A 5xx hard bounce at RCPT: the message is not sent, the sender's warmup is paused
    with an event, and the next tick plans nothing for it. A complaint about warmup mail
    (an unattributed bounce event naming its Message-ID) pauses that sender too."""
    peer = await ScriptedPeer().start()
    try:
        ida = await _account(app, "p1@wa.test", smtp=("127.0.0.1", peer.port))
        idb = await _account(app, "p2@wb.test", smtp=("127.0.0.1", peer.port))
        for account in (ida, idb):
            await _enable(app, account, started_on=dt.date.today(), daily_start=2)
        peer.script.rcpt["p2@wb.test"] = "550 5.1.1 no such user"
        await tick(app, all_now=True)
        rows = await app.db.fetch(
            "SELECT id FROM warmup_messages WHERE from_account_id = $1 ORDER BY id", ida
        )
        steps = Steps(app, services.get(SENDER), services.get(METRICS))
        row = await store.row(app.db, TENANT, rows[0]["id"])
        assert row is not None
        assert (await steps.outbound(row))["status"] == "failed"
        paused = await app.db.fetchrow(
            "SELECT paused_at, paused_reason FROM warmup_configs WHERE email_account_id = $1",
            ida,
        )
        assert paused["paused_at"] is not None and "550" in paused["paused_reason"]
        events = await app.db.fetch("SELECT subject_id FROM events WHERE type = 'warmup.paused'")
        assert [e["subject_id"] for e in events] == [ida]
        row = await store.row(app.db, TENANT, rows[1]["id"])
        assert row is not None
        assert (await steps.outbound(row))["status"] == "inactive"
        before = await _planned(app, dt.date.today())
        await tick(app, all_now=True)
        assert (await _planned(app, dt.date.today()))[ida] == before[ida]
        assert not peer.messages
        # A complaint that bounce processing could not attribute (warmup mail has no
        # delivery row) names the warmup Message-ID: the next tick pauses its sender.
        theirs = await app.db.fetchval(
            "SELECT message_id FROM warmup_messages WHERE from_account_id = $1 LIMIT 1", idb
        )
        for n, mid in enumerate((theirs.strip("<>"), "<unrelated@wb.test>")):
            await app.db.execute(
                "INSERT INTO events (tenant_id, type, payload, dedupe_key) "
                "VALUES ($1, 'bounce.unattributed', $2, $3)",
                TENANT,
                {"kind": "complaint", "original_message_id": mid, "bounce_type": None},
                f"x{n}",
            )
        result = await tick(app, all_now=True)
        assert result.paused == 1
        assert (
            await app.db.fetchval(
                "SELECT paused_reason FROM warmup_configs WHERE email_account_id = $1", idb
            )
            == "complaint"
        )
        assert (await tick(app, all_now=True)).paused == 0
    finally:
        await peer.stop()


async def test_warmup_mail_is_never_a_campaign_reply(app: App) -> None:
    """Warmup mail answering a campaign's Message-ID is stored as kind warmup: no reply
    event, no campaign counter. The same bytes with a forged marker are ordinary mail
    (here a reply to the campaign)."""
    await app.db.execute(
        "INSERT INTO email_deliveries (id, tenant_id, campaign_id, recipient_email, "
        "idempotency_key, message_id, status, sent_at) VALUES "
        "('dlv1', $1, 'camp1', 'bob@wb.test', 'k1', '<d1@wa.test>', 'sent', now())",
        TENANT,
    )
    account = await add_account(
        app.db, CredentialBox(app.secret_key), tenant_id=TENANT, address="box@wa.test",
        imap_host="127.0.0.1", imap_port=143, imap_security="none", password="pw",
    )  # fmt: skip
    assert account is not None
    marker = WarmupMarker(app.secret_key)
    genuine = marker.mint("wb.test")
    forged = WarmupMarker(b"f" * 40).mint("wb.test")
    kinds = []
    for uid, message_id in ((1, genuine), (2, forged)):
        draft = content.reply_to("s", "bob@wb.test", "box@wa.test", message_id, "Hello",
                                 "<d1@wa.test>", None)  # fmt: skip
        raw = content.render(draft, date=0)
        pending = Pending(
            account,
            MailboxPosition(account.id, "INBOX", 1, uid),
            analyse(raw, 1 << 20, marker),
        )
        async with app.db.acquire() as conn:
            (outcome,) = await store_batch(conn, [pending])
        kinds.append(outcome.kind)
    assert kinds == ["warmup", "reply"]
    stored = await app.db.fetch(
        "SELECT message_type FROM email_messages WHERE tenant_id = $1 ORDER BY subject", TENANT
    )
    assert sorted(r["message_type"] for r in stored) == ["reply", "warmup"]


async def test_planner_component_has_one_leader(app: App) -> None:
    """Two planner components (two instances): one holds the lease and plans what is due
    by now on today's schedule; the other plans nothing; stopping frees the lease."""
    ids = [await _account(app, f"c{i}@{DOMAINS[i % 2]}") for i in range(2)]
    for account in ids:
        await _enable(app, account, daily_start=48, daily_max=48, started_on=dt.date.today(),
                      window_start_hour=0, window_end_hour=24)  # fmt: skip
    before = dt.datetime.now(dt.UTC)
    first, second = PlannerComponent(app), PlannerComponent(app)
    await first.start()
    await poll(lambda: asyncio.sleep(0, first.ticks), lambda n: n >= 1, 10)
    await second.start()
    await asyncio.sleep(0.2)
    after = dt.datetime.now(dt.UTC)
    try:
        assert second.ticks == 0 and first.ready() and second.ready()
        cfg = await store.config(app.db, TENANT, ids[0])
        assert cfg is not None
        times = plan.schedule(48, before.date(), cfg.window, f"{TENANT}:{ids[0]}")
        low, high = plan.to_plan(times, 0, before, False), plan.to_plan(times, 0, after, False)
        planned = await _planned(app, before.date())
        assert low <= planned.get(ids[0], 0) <= high
        assert await app.redis.get(LEASE_KEY) == first.holder.encode()
    finally:
        loop = asyncio.get_running_loop()
        await first.stop(loop.time() + 5)
        await second.stop(loop.time() + 5)
    assert await app.redis.get(LEASE_KEY) is None


async def test_not_found_in_time_counts_as_missing(
    app: App, services: Services, lmtp_dovecot: Dovecot
) -> None:
    """A message that never arrived: looked for again until warmup_missing_after_s, then
    recorded missing (a placement event), and no engagement follows."""
    app.settings = app.settings.model_copy(update={"warmup_missing_after_s": 60.0})
    a = new_box(lmtp_dovecot, DOMAINS[0])
    b = new_box(lmtp_dovecot, DOMAINS[1])
    ida = await _account(app, a.address, dovecot=lmtp_dovecot, password=a.password)
    idb = await _account(app, b.address, dovecot=lmtp_dovecot, password=b.password)
    for account in (ida, idb):
        await _enable(app, account, started_on=dt.date.today())
    await tick(app, all_now=True)
    row_id = await app.db.fetchval("SELECT id FROM warmup_messages WHERE from_account_id = $1", ida)
    await app.db.execute("UPDATE warmup_messages SET sent_at = now() WHERE id = $1", row_id)
    steps = Steps(app, services.get(SENDER), services.get(METRICS))
    row = await store.row(app.db, TENANT, row_id)
    assert row is not None
    with pytest.raises(DeferJob):
        await steps.inbound(row, None)
    await app.db.execute(
        "UPDATE warmup_messages SET sent_at = now() - interval '2 minutes' WHERE id = $1", row_id
    )
    row = await store.row(app.db, TENANT, row_id)
    assert row is not None
    assert (await steps.inbound(row, None))["status"] == "missing"
    row = await store.row(app.db, TENANT, row_id)
    assert row is not None and row.missing_at is not None and row.folder_found is None
    assert (await steps.engagement(row))["status"] == "not found"
    placement = await app.db.fetchval(
        "SELECT payload->>'placement' FROM events WHERE subject_id = $1", row_id
    )
    assert placement == "missing"


async def test_imap_finds_junk_by_special_use_and_moves_without_move(
    lmtp_dovecot: Dovecot,
) -> None:
    """The client finds Junk by SPECIAL-USE, locates a message there by Message-ID and,
    on a server without MOVE, moves it with COPY + STORE \\Deleted + UID EXPUNGE; a
    master-user login finds it too."""
    box = new_box(lmtp_dovecot, DOMAINS[0])
    mid = "<junk1.test@wb.test>"
    lmtp_dovecot.deliver(
        box.address, f"Message-ID: {mid}\r\nSubject: x\r\n\r\nx\r\n".encode(), "Junk"
    )
    login = ImapEndpoint(lmtp_dovecot.host, lmtp_dovecot.port, "none", box.address, box.password)
    async with await ImapClient.connect(login, 10) as imap:
        assert "MOVE" in imap.capabilities
        assert await imap.junk() == "Junk"
        imap.capabilities = imap.capabilities - {"MOVE"}
        where = await locate(imap, mid)
        assert where is not None and (where.placement, where.folder) == ("spam", "Junk")
        await imap.move_to_inbox(where.uid)
        assert await imap.find("Junk", mid) == []
        assert len(await imap.find("INBOX", mid)) == 1
    # The master user (``user*master``, the master's password) sees the same mailbox.
    master = ImapEndpoint(
        lmtp_dovecot.host, lmtp_dovecot.port, "none", box.address,
        lmtp_dovecot.master_password, master_user=lmtp_dovecot.master_user,
    )  # fmt: skip
    async with await ImapClient.connect(master, 10) as imap:
        where = await locate(imap, mid)
        assert where is not None and where.placement == "inbox"


async def test_a_seed_producers_bare_outbound_step_plans_and_sends_one(
    app: App, services: Services
) -> None:
    """The seed's payload (account, warmup_type, sequence_step; no row) plans one send
    within today's quota and sends it: a marked Message-ID, plain text, no List-Unsubscribe;
    at quota, the next bare step plans nothing."""
    peer = await ScriptedPeer().start()
    try:
        ida = await _account(app, "s1@wa.test", smtp=("127.0.0.1", peer.port))
        idb = await _account(app, "s2@wb.test", smtp=("127.0.0.1", peer.port))
        for account in (ida, idb):
            await _enable(app, account, started_on=dt.date.today(), daily_start=1)
        steps = Steps(app, services.get(SENDER), services.get(METRICS))
        raw = new_job({"email_account_id": ida, "warmup_type": "outbound", "sequence_step": 0})
        job = parse_job(json.dumps(raw).encode(), WARMUP)
        payload = WarmupPayload.model_validate(job.payload)
        result = await steps.handle(job, payload)
        assert [r["status"] for r in result["results"]] == ["sent"]
        (sent,) = peer.messages
        assert sent.rcpt_tos == ["s2@wb.test"]
        message_id = re.search(rb"Message-ID: (<[^>]+>)", sent.content)
        assert message_id and WarmupMarker(app.secret_key).verify(message_id.group(1).decode())
        assert b"List-Unsubscribe" not in sent.content and b"http" not in sent.content
        again = await steps.handle(job, payload)
        assert again["results"] == [] and len(peer.messages) == 1
    finally:
        await peer.stop()


async def test_next_message_continues_the_partners_last_reply(app: App, services: Services) -> None:
    """A sender's next message to a partner that answered it continues that thread (Re:
    subject, In-Reply-To the reply, References the chain), once; the one after starts a new
    conversation."""
    peer = await ScriptedPeer().start()
    try:
        ida = await _account(app, "t1@wa.test", smtp=("127.0.0.1", peer.port))
        idb = await _account(app, "t2@wb.test", smtp=("127.0.0.1", peer.port))
        await _enable(app, ida, started_on=DAY0, daily_start=1, daily_increment=0)
        await _enable(app, idb, started_on=DAY0, daily_start=0, daily_increment=0)
        await tick(app, now=dt.datetime.combine(DAY0, dt.time(12), tzinfo=dt.UTC), all_now=True)
        first = await app.db.fetchrow("SELECT * FROM warmup_messages")
        assert first["in_reply_to"] is None
        to_a = plan.Member(ida, TENANT, "", 0.0, "t1@wa.test")
        await store.insert(
            app.db, row_id="wm_reply1", tenant_id=TENANT, from_account_id=idb, to=to_a,
            message_id="<r1@wb.test>", quota_day=DAY0, subject="Re: " + first["subject"],
            parent_id=first["id"], in_reply_to=first["message_id"],
            references=first["message_id"],
        )  # fmt: skip
        await app.db.execute("UPDATE warmup_messages SET sent_at = now()")
        day1 = DAY0 + dt.timedelta(days=1)
        await tick(app, now=dt.datetime.combine(day1, dt.time(12), tzinfo=dt.UTC), all_now=True)
        second = await app.db.fetchrow("SELECT * FROM warmup_messages WHERE quota_day = $1", day1)
        assert second["in_reply_to"] == "<r1@wb.test>"
        assert second["references"] == f"{first['message_id']} <r1@wb.test>"
        assert second["subject"] == "Re: " + first["subject"]
        steps = Steps(app, services.get(SENDER), services.get(METRICS))
        row = await store.row(app.db, TENANT, second["id"])
        assert row is not None and (await steps.outbound(row))["status"] == "sent"
        (sent,) = peer.messages
        assert b"In-Reply-To: <r1@wb.test>\r\n" in sent.content
        assert b"Subject: Re: " + first["subject"].encode() + b"\r\n" in sent.content
        day2 = DAY0 + dt.timedelta(days=2)
        await tick(app, now=dt.datetime.combine(day2, dt.time(12), tzinfo=dt.UTC), all_now=True)
        third = await app.db.fetchrow("SELECT * FROM warmup_messages WHERE quota_day = $1", day2)
        assert third["in_reply_to"] is None
    finally:
        await peer.stop()


async def test_rows_whose_job_was_lost_are_queued_again(app: App) -> None:
    """A crash between the planning commit and the LPUSH loses the outbound jobs: a later
    tick queues them again, for an active sender only."""
    ids = [await _account(app, f"q{i}@{DOMAINS[i % 2]}") for i in range(2)]
    for account in ids:
        await _enable(app, account, started_on=dt.date.today(), daily_start=2)
    first = await tick(app, all_now=True)
    assert first.total == 4 and first.requeued == 0
    await app.redis.delete(WARMUP)  # the jobs are gone
    await app.db.execute("UPDATE warmup_messages SET planned_at = now() - interval '1 hour'")
    await app.db.execute(
        "UPDATE warmup_configs SET paused_at = now() WHERE email_account_id = $1", ids[1]
    )
    again = await tick(app, all_now=True)
    assert again.total == 0 and again.requeued == 2
    jobs = [json.loads(j) for j in await app.redis.lrange(WARMUP, 0, -1)]
    assert {j["payload"]["email_account_id"] for j in jobs} == {ids[0]}
    assert {j["payload"]["warmup_type"] for j in jobs} == {"outbound"}
