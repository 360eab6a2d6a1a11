"""Hostile input and isolation (issue 16), against real PostgreSQL, Redis and Dovecot:
envelope bytes refused at their command, postmaster, the memory budget under a flood,
byte-capped group commits where a slow member fails alone, bounces that need evidence,
and reports counted once whatever envelope replays them."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiosmtplib
import pytest

from bounces.errors import StorageUnavailable
from bounces.intake import UNATTRIBUTED_TENANT, Intake, SmtpEnvelope
from bounces.listener import Listener
from bounces.metrics import METRICS
from bounces.smtp_policy import SMALL_MESSAGE_BYTES, MemoryBudget, Replies, storable_address
from gateway.app import App
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.verp import Verp
from ingest.accounts import add_account
from ingest.component import IngestComponent
from tests.bounces.test_listener import RawSmtp, counter, drain_bounce_queue, wait_for
from tests.bounces.test_processing import add_delivery, make_arf, make_dsn
from tests.ingest.helpers import Appender, Mailbox
from tests.peers.dovecot import Dovecot

StartListener = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def start_listener(app: App, services: Services) -> AsyncIterator[StartListener]:
    """``await start_listener(**setting_overrides)``: a started Listener on a free port."""
    made: list[Listener] = []

    async def start(intake: Intake | None = None, **overrides: Any) -> Listener:
        if overrides:
            app.settings = app.settings.model_copy(update=overrides)
        listener = Listener(app, intake or Intake(app), services.get(METRICS))
        await listener.start()
        made.append(listener)
        return listener

    yield start
    loop = asyncio.get_running_loop()
    for listener in made:
        await listener.stop(loop.time() + 5)


async def open_from(port: int, source_ip: str) -> tuple[RawSmtp, str]:
    """A raw SMTP session from ``source_ip`` (any 127.0.0.0/8 address works on loopback)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip, 0))
    session = RawSmtp(reader, writer)
    return session, await session.reply()


# -- envelope bytes and postmaster ----------------------------------------------------------


async def test_unstorable_envelope_bytes_get_5xx_at_the_command(
    app: App, start_listener: StartListener
) -> None:
    """MAIL FROM or RCPT with \\xff or NUL bytes is refused at that command with 553 (never
    a 451 after DATA that the sender would retry for ever); the session stays usable."""
    listener = await start_listener()
    smtp, _ = await RawSmtp.open(listener.port)
    await smtp.cmd("EHLO peer.test")
    for bad in (b"MAIL FROM:<bounce\xff@mx.rcpt.test>", b"MAIL FROM:<a\x00b@mx.rcpt.test>"):
        reply = await smtp.cmd(bad)
        assert reply.startswith("553 5.1.7"), reply
    assert (await smtp.cmd("MAIL FROM:<ok@mx.rcpt.test>")).startswith("250")
    reply = await smtp.cmd(b"RCPT TO:<b+\xfe\xff@bounces.test>")
    assert reply.startswith("553 5.1.3"), reply
    assert (await smtp.cmd("RCPT TO:<b+x@bounces.test>")).startswith("250")
    assert (await smtp.cmd("DATA")).startswith("354")
    assert (await smtp.cmd(b"Subject: fine\r\n\r\nok\r\n.")).startswith("250 2.0.0")
    await smtp.close()
    assert counter(app, "smtp_listener_rejections_total", cause="envelope") == 3
    assert await app.db.fetchval("SELECT mail_from FROM bounce_receipts") == "ok@mx.rcpt.test"


def test_storable_address() -> None:
    """NUL and undecodable bytes (surrogates) cannot be stored; UTF-8 addresses can."""
    assert storable_address("josé@exämple.test") and storable_address("")
    assert not storable_address("a\x00b@x.test")
    assert not storable_address(b"a\xff@x.test".decode("utf-8", "surrogateescape"))


async def test_bare_postmaster_is_accepted_and_kept_for_the_operator(
    app: App, start_listener: StartListener
) -> None:
    """RCPT TO:<postmaster> (RFC 5321 4.5.1) and postmaster@ a bounce domain get 250; the
    message is stored unattributed with verp_status postmaster; postmaster of another
    domain is still relaying (550)."""
    listener = await start_listener()
    smtp, _ = await RawSmtp.open(listener.port)
    await smtp.cmd("EHLO peer.test")
    await smtp.cmd("MAIL FROM:<someone@else.test>")
    assert (await smtp.cmd("RCPT TO:<Postmaster>")).startswith("250")
    assert (await smtp.cmd("RCPT TO:<postmaster@Bounces.test>")).startswith("250")
    assert (await smtp.cmd("RCPT TO:<postmaster@other.test>")).startswith("550 5.7.1")
    await smtp.cmd("DATA")
    assert (await smtp.cmd(b"Subject: hello postmaster\r\n\r\nhi\r\n.")).startswith("250")
    await smtp.close()
    row = await app.db.fetchrow("SELECT tenant_id, verp_status, rcpt_tos FROM bounce_receipts")
    assert (row["tenant_id"], row["verp_status"]) == (UNATTRIBUTED_TENANT, "postmaster")
    assert row["rcpt_tos"] == ["Postmaster", "postmaster@Bounces.test"]


# -- the memory budget ------------------------------------------------------------------------


def test_memory_budget_is_fair() -> None:
    """One address holds at most its share; large messages never take the small-message
    slice; small ones use it when the common part is full; release gives all back."""
    budget = MemoryBudget(8_000_000, per_ip=3_000_000, small_reserve=1_000_000)
    big = [budget.hold(f"10.0.0.{n}") for n in range(4)]
    assert big[0].grow(3_000_000) and not big[0].grow(1)  # its address's share is used up
    assert big[1].grow(3_000_000)
    assert not big[2].grow(2_000_000)  # would reach into the reserve
    assert big[2].grow(1_000_000) and budget.common_used == 7_000_000
    small = budget.hold("10.0.0.9")
    assert small.grow(30_000) and small.reserved == 30_000  # common part full: the reserve
    assert small.grow(30_000) and small.reserved == 60_000
    assert not small.grow(SMALL_MESSAGE_BYTES)  # no longer small: needs the common part
    assert not budget.exhausted
    for h in [*big, small]:
        h.release()
        h.release()  # idempotent
    assert (budget.used, dict(budget.by_ip)) == (0, {})


async def test_a_flood_of_large_messages_never_starves_small_dsns(
    app: App, start_listener: StartListener
) -> None:
    """Four addresses hold large messages open past the budget (2 MB here); meanwhile 10
    small DSNs from a fifth address all get 250 and are stored; the large messages over
    the budget get 452 4.3.1 after their data; afterwards the budget is empty again."""
    listener = await start_listener(
        smtp_memory_budget_bytes=2 * 1024 * 1024, smtp_max_message_bytes=1024 * 1024
    )
    line = b"y" * 998 + b"\r\n"
    half = line * 200  # ~200 KB: a large message's first half
    floods: list[RawSmtp] = []
    for n in range(8):  # 2 sessions per address, each 400 KB when done: 3.2 MB wanted
        smtp, _ = await open_from(listener.port, f"127.0.0.{2 + n % 4}")
        await smtp.cmd("EHLO flood.test")
        await smtp.cmd("MAIL FROM:<flood@flood.test>")
        await smtp.cmd(f"RCPT TO:<b+flood{n}@bounces.test>")
        assert (await smtp.cmd("DATA")).startswith("354")
        smtp.writer.write(b"Subject: large\r\n\r\n" + half + half)
        await smtp.writer.drain()
        floods.append(smtp)
    await wait_for(lambda: _value(listener.budget.refused > 0))
    assert listener.budget.common_used > listener.budget.common - 400_000

    async def small(n: int) -> None:
        response, _ = await aiosmtplib.send(
            make_dsn(f"r{n}@rcpt.test", salt=f" {n}"),
            sender="mailer-daemon@dsn.test",
            recipients=[f"b+small{n}@bounces.test"],
            hostname="127.0.0.1",
            port=listener.port,
            source_address=("127.0.0.9", 0),
        )
        assert response == {}

    await asyncio.gather(*(small(n) for n in range(10)))
    replies = []
    for smtp in floods:
        replies.append(await smtp.cmd(b"."))
        await smtp.close()
    assert any(r.startswith("250 2.0.0") for r in replies), replies
    assert any(r.startswith(Replies.NO_MEMORY[:9]) for r in replies), replies
    assert all(r.startswith(("250 2.0.0", Replies.NO_MEMORY[:9])) for r in replies), replies
    stored = await app.db.fetchval(
        "SELECT count(*) FROM bounce_receipts WHERE rcpt_tos[1] LIKE 'b+small%'"
    )
    assert stored == 10
    assert counter(app, "smtp_listener_rejections_total", cause="memory") >= 1
    await wait_for(lambda: _value(listener.budget.used == 0))


async def test_connect_refused_with_421_while_the_budget_is_used_up(
    app: App, start_listener: StartListener
) -> None:
    """With all of the budget held (the small slice included), a new connection gets 421
    4.3.1; once the holders are done, connections are taken again."""
    listener = await start_listener(smtp_memory_budget_bytes=1024 * 1024)
    held = listener.budget.hold("192.0.2.1")
    assert held.grow(listener.budget.common)
    small = [listener.budget.hold(f"192.0.2.{n}") for n in range(2, 20)]
    for h in small:
        h.grow(SMALL_MESSAGE_BYTES - 1)
    assert listener.budget.exhausted
    smtp, greeting = await RawSmtp.open(listener.port)
    assert greeting.startswith(Replies.BUSY), greeting
    await smtp.close()
    for h in [held, *small]:
        listener.release(h)
    smtp, greeting = await RawSmtp.open(listener.port)
    assert greeting.startswith("220")
    await smtp.close()
    assert counter(app, "smtp_listener_rejections_total", cause="memory") == 1


async def _value(value: Any) -> Any:
    return value


# -- group commits: byte caps, a slow member fails alone ------------------------------------


async def test_batches_are_capped_in_bytes(app: App) -> None:
    """Six 300 KB messages submitted at once under a 700 KB cap commit in at least three
    batches; all are stored."""
    intake = Intake(app, max_batch_bytes=700 * 1024)
    raws = [b"Subject: %d\r\n\r\n" % n + b"z" * 300 * 1024 for n in range(6)]
    await asyncio.gather(
        *(
            intake.accept(SmtpEnvelope("", (f"b+c{n}@bounces.test",), "127.0.0.1"), raw)
            for n, raw in enumerate(raws)
        )
    )
    assert intake.batches >= 3
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 6


async def test_a_slow_member_times_out_alone(app: App) -> None:
    """A batch held up by one slow message times out and is run again message by message:
    the others are committed, the slow one alone gets StorageUnavailable that says it
    timed out (not 'unreachable')."""
    app.settings = app.settings.model_copy(update={"smtp_commit_timeout_s": 3.0})

    class SlowForOne(Intake):
        async def _store_all(self, batch: Any) -> Any:
            if any(b"SLOW" in item.raw for item in batch):
                await asyncio.sleep(30)
            return await super()._store_all(batch)

    intake = SlowForOne(app)
    raws = [b"Subject: fast %d\r\n\r\nok\r\n" % n for n in range(5)]
    raws.insert(2, b"Subject: SLOW\r\n\r\nslow\r\n")
    results = await asyncio.gather(
        *(
            intake.accept(SmtpEnvelope("", (f"b+s{n}@bounces.test",), "127.0.0.1"), raw)
            for n, raw in enumerate(raws)
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], StorageUnavailable)
    assert "timed out" in str(failed[0]) and "unreachable" not in str(failed[0])
    assert intake.isolated == 1
    subjects = await app.db.fetch("SELECT subject FROM email_messages ORDER BY subject")
    assert [r["subject"] for r in subjects] == [f"fast {n}" for n in range(5)]


# -- evidence: a forged bounce in a tenant's mailbox ----------------------------------------


def _forged_dsn(recipient: str, original_message_id: str) -> bytes:
    """A DSN as anyone could write one: no VERP token anywhere."""
    return make_dsn(
        recipient,
        to="sales@tenant-box.test",
        original_message_id=original_message_id,
        salt=f" {secrets.token_hex(3)}",
    )


async def test_forged_dsn_in_a_mailbox_changes_nothing_a_real_one_bounces(
    app: App, services: Services, dovecot: Dovecot
) -> None:
    """A DSN APPENDed into a tenant's mailbox with no token and an unrelated Message-ID
    changes no delivery and no suppression (recorded unattributed, the recipient's send
    named as candidate); a DSN carrying the delivery's real Message-ID bounces it."""
    app.settings = app.settings.model_copy(
        update={"ingest_start_stagger_s": 0.0, "ingest_account_poll_s": 0.5}
    )
    address = f"box{secrets.token_hex(4)}@ingest.test"
    password = secrets.token_hex(8)
    dovecot.add_user(address, password)
    account = await add_account(
        app.db,
        CredentialBox(app.secret_key),
        tenant_id="t1",
        address=address,
        imap_host=dovecot.host,
        imap_port=dovecot.port,
        imap_security="none",
        username=address,
        password=password,
    )
    await add_delivery(app, "dm1", recipient="victim@rcpt.test", message_id="<dm1.x@send.test>")
    await app.db.execute(
        "UPDATE email_deliveries SET email_account_id = $1 WHERE id = 'dm1'", account.id
    )
    component = IngestComponent(app)
    await component.start()
    appender = Appender(dovecot, Mailbox(address, password))
    try:
        async with appender:
            await appender.append(_forged_dsn("victim@rcpt.test", "<unrelated@elsewhere.test>"))
        await wait_for(lambda: app.redis.llen("queue:bounce:process"), 30)
        await drain_bounce_queue(app, services)
        row = await app.db.fetchrow("SELECT * FROM email_deliveries WHERE id = 'dm1'")
        assert (row["status"], row["bounce_type"]) == ("sent", None)
        assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0
        report = await app.db.fetchrow("SELECT * FROM bounce_reports")
        assert (report["outcome"], report["source"], report["candidate_delivery_id"]) == (
            "unattributed",
            "mailbox",
            "dm1",
        )
        assert await app.db.fetchval("SELECT count(*) FROM campaign_metrics") == 0

        async with appender:
            await appender.append(_forged_dsn("victim@rcpt.test", "<dm1.x@send.test>"))
        await wait_for(lambda: app.redis.llen("queue:bounce:process"), 30)
        await drain_bounce_queue(app, services)
    finally:
        await component.stop(asyncio.get_running_loop().time() + 5)
    row = await app.db.fetchrow("SELECT * FROM email_deliveries WHERE id = 'dm1'")
    assert (row["status"], row["bounce_type"]) == ("bounced", "hard")
    assert (await app.db.fetchval("SELECT reason FROM suppressions")) == "hard_bounce"
    attributions = await app.db.fetch("SELECT attribution FROM bounce_reports ORDER BY id")
    assert [r["attribution"] for r in attributions] == ["none", "message_id"]


async def _mailbox_report(app: App, raw: bytes, account_id: str | None, uid: int) -> str:
    """Store ``raw`` as ingest would from a mailbox; the storage key."""
    from gateway.messages import MessageRecord, store_message

    async with app.db.acquire() as conn:
        stored = await store_message(
            conn,
            MessageRecord(
                tenant_id="t1",
                dedupe_key=f"imap:{account_id}:INBOX:1:{uid}",
                email_account_id=account_id,
                raw=raw,
                source="imap",
                message_type="bounce",
            ),
        )
    return stored.storage_key


async def _push_mailbox_job(app: App, storage_key: str) -> None:
    from gateway.jobs.contracts import BOUNCE, BouncePayload, encode_job

    payload = BouncePayload(tenant_id="t1", storage_key=storage_key, source="mailbox")
    await app.redis.lpush(BOUNCE, encode_job(BOUNCE, payload))


async def test_message_id_evidence_needs_the_recipient_and_the_account(
    app: App, services: Services
) -> None:
    """A real Message-ID is evidence only for the recipient it was sent to and from the
    mailbox's own account: the same Message-ID reported for another recipient, or found
    in another account's mailbox, changes nothing; a complaint follows the same rule."""
    await add_delivery(app, "dr1", recipient="bob@rcpt.test", message_id="<dr1@send.test>")
    await app.db.execute("UPDATE email_deliveries SET email_account_id = 'acc1'")
    other_rcpt = await _mailbox_report(
        app, make_dsn("eve@rcpt.test", original_message_id="<dr1@send.test>"), "acc1", 1
    )
    other_box = await _mailbox_report(
        app, make_dsn("bob@rcpt.test", original_message_id="<dr1@send.test>", salt=" 2"), "acc2", 2
    )
    complaint = await _mailbox_report(app, make_arf("bob@rcpt.test", "<dr1@send.test>"), "acc2", 3)
    for key in (other_rcpt, other_box, complaint):
        await _push_mailbox_job(app, key)
    await drain_bounce_queue(app, services)
    assert (await app.db.fetchval("SELECT status FROM email_deliveries")) == "sent"
    outcomes = await app.db.fetch("SELECT outcome FROM bounce_reports")
    assert [r["outcome"] for r in outcomes] == ["unattributed"] * 3
    assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_listener_dsn_without_token_needs_evidence(app: App, services: Services) -> None:
    """Mail to the listener without a token (here: to postmaster) is attributed only by
    evidence in the report: the returned message's real Message-ID bounces its delivery
    (under the delivery's tenant); an unrelated one is recorded unattributed."""
    await add_delivery(app, "dl1", recipient="gone@rcpt.test", message_id="<dl1@send.test>")
    intake = Intake(app)
    for n, mid in enumerate(("<nothing@x.test>", "<dl1@send.test>")):
        await intake.accept(
            SmtpEnvelope(f"mta{n}@rcpt.test", ("postmaster@bounces.test",), "127.0.0.1"),
            make_dsn("gone@rcpt.test", original_message_id=mid, salt=f" {n}"),
        )
    await drain_bounce_queue(app, services)
    rows = await app.db.fetch("SELECT tenant_id, outcome, attribution FROM bounce_reports")
    assert sorted(tuple(r) for r in rows) == [
        (UNATTRIBUTED_TENANT, "unattributed", "none"),
        ("t1", "bounced_hard", "message_id"),
    ]
    assert (await app.db.fetchval("SELECT status FROM email_deliveries")) == "bounced"


# -- one report counts once -------------------------------------------------------------------


async def test_soft_dsn_under_three_envelopes_counts_once(
    app: App, services: Services, start_listener: StartListener
) -> None:
    """The same soft DSN for a real delivery, sent to the listener under three envelope
    senders, is stored three times but counted once: one report, one event, one soft
    count, no suppression (bounce_soft_limit 3)."""
    listener = await start_listener()
    await add_delivery(app, "ds1", recipient="full@rcpt.test")
    rcpt = Verp(app.secret_key).address("ds1", "bounces.test")
    raw = make_dsn(
        "full@rcpt.test",
        status="4.2.2",
        diagnostic="smtp; 452 4.2.2 <{rcpt}>: Mailbox full",
    ).replace(b"Subject:", b"Message-ID: <dsn-ds1@mx.rcpt.test>\r\nSubject:", 1)
    for sender in ("a@mx1.test", "b@mx2.test", "mailer-daemon@mx3.test"):
        response, _ = await aiosmtplib.send(
            raw, sender=sender, recipients=[rcpt], hostname="127.0.0.1", port=listener.port
        )
        assert response == {}
    await drain_bounce_queue(app, services)
    assert await app.db.fetchval("SELECT count(*) FROM bounce_receipts") == 3
    reports = await app.db.fetch("SELECT outcome FROM bounce_reports")
    assert [r["outcome"] for r in reports] == ["bounced_soft"]
    assert await app.db.fetchval("SELECT count(*) FROM events") == 1
    assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0
    metrics = await app.db.fetchrow("SELECT * FROM campaign_metrics")
    assert metrics["bounced_soft"] == 1


async def test_hard_bounce_replay_emits_no_second_event(app: App, services: Services) -> None:
    """A hard DSN replayed under another envelope (and found again in a mailbox) changes
    nothing the second and third time: one report, one event, one count."""
    await add_delivery(app, "dh1", recipient="nobody@rcpt.test")
    rcpt = Verp(app.secret_key).address("dh1", "bounces.test")
    raw = make_dsn("nobody@rcpt.test").replace(
        b"Subject:", b"Message-ID: <dsn-dh1@mx.rcpt.test>\r\nSubject:", 1
    )
    intake = Intake(app)
    await intake.accept(SmtpEnvelope("", (rcpt,), "127.0.0.1"), raw)
    await intake.accept(SmtpEnvelope("x@replay.test", (rcpt,), "127.0.0.1"), raw)
    await drain_bounce_queue(app, services)
    await app.db.execute("UPDATE email_deliveries SET message_id = '<orig-1@sender.test>'")
    await _push_mailbox_job(app, await _mailbox_report(app, raw, None, 9))
    await drain_bounce_queue(app, services)
    assert await app.db.fetchval("SELECT count(*) FROM bounce_reports") == 1
    assert await app.db.fetchval("SELECT count(*) FROM events") == 1
    assert (await app.db.fetchrow("SELECT * FROM campaign_metrics"))["bounced_hard"] == 1


async def test_soft_bounces_count_distinct_deliveries_not_copies(
    app: App, services: Services
) -> None:
    """Three different soft reports about ONE delivery on one day count once (no
    suppression); reports about three different sends to the recipient suppress."""
    intake = Intake(app)
    await add_delivery(app, "one", recipient="busy@rcpt.test")
    rcpt = Verp(app.secret_key).address("one", "bounces.test")
    for n in range(3):
        raw = make_dsn("busy@rcpt.test", status="4.2.2", diagnostic="x", salt=f" {n}")
        raw = raw.replace(b"Subject:", b"Message-ID: <soft-%d@mx.test>\r\nSubject:" % n, 1)
        await intake.accept(SmtpEnvelope("", (rcpt,), "127.0.0.1"), raw)
    await drain_bounce_queue(app, services)
    assert await app.db.fetchval("SELECT count(*) FROM bounce_reports") == 3
    assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0
    for n in range(2):
        await add_delivery(app, f"more{n}", recipient="busy@rcpt.test")
        raw = make_dsn("busy@rcpt.test", status="4.2.2", diagnostic="x", salt=f" m{n}")
        rcpt = Verp(app.secret_key).address(f"more{n}", "bounces.test")
        await intake.accept(SmtpEnvelope("", (rcpt,), "127.0.0.1"), raw)
    await drain_bounce_queue(app, services)
    assert (await app.db.fetchval("SELECT reason FROM suppressions")) == "soft_bounce"


async def test_nul_in_a_report_is_stored_not_retried_for_ever(app: App, services: Services) -> None:
    """A DSN whose fields carry NUL bytes (found by the fuzz suite) is processed: the
    report is recorded with the NUL replaced, the job completes on its first attempt."""
    await add_delivery(app, "dn1", recipient="gone@rcpt.test")
    raw = make_dsn("gone@rcpt.test", diagnostic="smtp; 550 5.1.1 no\x00such user")
    key = await _mailbox_report(
        app, raw.replace(b"Reporting-MTA: dns; mx", b"Reporting-MTA: \x00"), None, 11
    )
    await _push_mailbox_job(app, key)
    await drain_bounce_queue(app, services)
    diagnostic = await app.db.fetchval("SELECT diagnostic FROM bounce_reports")
    assert diagnostic is not None and "\x00" not in diagnostic and "such user" in diagnostic
    assert await app.redis.llen("queue:dead") == 0


async def test_a_peer_gone_during_the_commit_keeps_its_bytes_charged_until_it_ends(
    app: App, start_listener: StartListener
) -> None:
    """A peer that hangs up while its message is being committed: the commit finishes
    (the message is stored), and only then are its bytes given back to the budget."""
    release = asyncio.Event()

    class Held(Intake):
        async def _store_all(self, batch: Any) -> Any:
            await release.wait()
            return await super()._store_all(batch)

    listener = await start_listener(intake=Held(app))
    smtp, _ = await RawSmtp.open(listener.port)
    await smtp.cmd("EHLO gone.test")
    await smtp.cmd("MAIL FROM:<>")
    await smtp.cmd("RCPT TO:<b+gone@bounces.test>")
    await smtp.cmd("DATA")
    smtp.writer.write(b"Subject: gone\r\n\r\n" + b"z" * 5000 + b"\r\n.\r\n")
    await smtp.writer.drain()
    await wait_for(lambda: _value(listener.intake.busy))
    await smtp.close()
    await wait_for(lambda: _value(not listener.sessions))
    assert listener.budget.used > 5000  # still charged: the commit has not ended
    release.set()
    await wait_for(lambda: _value(listener.budget.used == 0))
    assert await app.db.fetchval("SELECT subject FROM email_messages") == "gone"


def test_large_buffers_go_back_to_the_system() -> None:
    """On glibc the listener fixes the mmap threshold (large message buffers get pages of
    their own, freed to the system) and can trim the heap after a burst."""
    from bounces.listener import trim_heap, tune_allocator

    assert tune_allocator() is True
    trim_heap()
