"""The issue's done-when, end to end against real peers: four Dovecot accounts (IMAP, and
SMTP through Postfix into Dovecot's LMTP) added with `mailgate accounts add`, warmup enabled
at a flat quota, a Sieve rule filing all mail for one of them into Junk, `mailgate warmup
tick --now-all` run a few times and the real job worker running the steps."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import App
from gateway.jobs.worker import Worker
from gateway.services import Services
from tests.peers.dovecot import Dovecot
from tests.peers.postfix import Postfix
from tests.warmup.conftest import DOMAINS, Box, Cli, new_box
from warmup.api import routes
from warmup.jobs import create_handler

TENANT = "tw"
QUOTA = 4
REPLY_RATE = 0.5


def _search(dovecot: Dovecot, address: str, *query: str) -> int:
    out = dovecot.doveadm("search", "-u", address, *query)
    return len(out.split()) // 2  # "guid uid" per message


def _header(dovecot: Dovecot, address: str, name: str, message_id: str) -> str:
    out = dovecot.doveadm(
        "-f", "flow", "fetch", "-u", address, f"hdr.{name}", "mailbox", "INBOX",
        "header", "message-id", message_id,
    )  # fmt: skip
    return out.partition("=")[2].strip()


async def _add(cli: Cli, dovecot: Dovecot, relay: Postfix, box: Box) -> str:
    code, out = await cli(
        "accounts", "add", "--tenant", TENANT, "--address", box.address,
        "--imap-host", dovecot.host, "--imap-port", str(dovecot.port),
        "--imap-security", "none", "--password-env", "WARM_PW",
        "--smtp-host", relay.host, "--smtp-port", str(relay.port), "--smtp-security", "none",
        WARM_PW=box.password,
    )  # fmt: skip
    assert code == 0, out
    return out.strip()


async def test_done_when(
    app: App,
    services: Services,
    lmtp_dovecot: Dovecot,
    relay: Postfix,
    cli: Cli,
    tmp_path: Path,
) -> None:
    """Every sent warmup message is found and its folder recorded; every one found in Junk
    ends in INBOX, read and flagged; replies within reply_rate +-1 per sender, threaded
    (In-Reply-To matches) and found by the sender; no account over its quota after three
    ticks; DKIM-signed; a disabled account untouched; `status --json` agrees with IMAP."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    app.settings = app.settings.model_copy(
        update={
            "warmup_inbound_delay_s": 0.2,
            "warmup_retry_find_s": 0.2,
            "warmup_missing_after_s": 30.0,
            "warmup_flag_rate": 1.0,
            "delivery_dkim_keys": f"{TENANT}:{DOMAINS[0]}:s1:{pem}",
            "delivery_dkim_signer_process": False,
        }
    )
    dovecot = lmtp_dovecot
    boxes = [
        new_box(dovecot, DOMAINS[0]),
        new_box(dovecot, DOMAINS[0]),
        new_box(dovecot, DOMAINS[1]),
        new_box(dovecot, DOMAINS[1], junk_all=True),
    ]
    idle = new_box(dovecot, DOMAINS[0])
    ids = [await _add(cli, dovecot, relay, b) for b in boxes]
    idle_id = await _add(cli, dovecot, relay, idle)
    address = dict(zip(ids, (b.address for b in boxes), strict=True))
    for account in [*ids, idle_id]:
        code, out = await cli(
            "warmup", "enable", account, "--daily-start", str(QUOTA), "--daily-increment", "0",
            "--daily-max", str(QUOTA), "--reply-rate", str(REPLY_RATE), "--window", "0-24",
        )  # fmt: skip
        assert code == 0, out
    assert (await cli("warmup", "disable", idle_id))[0] == 0

    worker = Worker(app, {"warmup": create_handler(app, services)}, rng=random.Random(3))
    await worker.start()
    try:
        for _ in range(3):
            code, out = await cli("warmup", "tick", "--now-all")
            assert code == 0, out
            await worker.run_until_empty(60)
    finally:
        await worker.stop(asyncio.get_running_loop().time() + 5)

    rows = [dict(r) for r in await app.db.fetch("SELECT * FROM warmup_messages")]
    originals = [r for r in rows if r["depth"] == 0]
    replies = {r["parent_id"]: r for r in rows if r["depth"] == 1}
    # Quota: exactly the flat quota per account, after three ticks.
    for account in ids:
        assert sum(r["from_account_id"] == account for r in originals) == QUOTA
    # Every message (and reply) sent, found, its folder recorded; none missing.
    assert all(r["sent_at"] and r["found_at"] and r["folder_found"] for r in rows), rows
    junk_box = ids[3]
    for r in rows:
        assert r["folder_found"] == ("spam" if r["to_account_id"] == junk_box else "inbox")
        assert r["read_at"] and r["flagged_at"]
        assert (r["moved_to_inbox_at"] is not None) == (r["folder_found"] == "spam")
    # Junk rescued: nothing left in the Junk folder, everything in INBOX, read and flagged.
    assert _search(dovecot, boxes[3].address, "mailbox", "Junk", "all") == 0
    to_junk_box = sum(r["to_account_id"] == junk_box for r in rows)
    assert to_junk_box > 0
    assert _search(dovecot, boxes[3].address, "mailbox", "INBOX", "all") == to_junk_box
    for box in boxes:
        total = _search(dovecot, box.address, "mailbox", "INBOX", "all")
        assert _search(dovecot, box.address, "mailbox", "INBOX", "seen", "flagged") == total
    # Replies: at the rate (+-1 per sender), threaded, found by the original sender.
    for account in ids:
        mine = [r for r in originals if r["from_account_id"] == account]
        answered = sum(r["id"] in replies for r in mine)
        assert abs(answered - REPLY_RATE * len(mine)) <= 1
    assert replies
    for parent in originals:
        reply = replies.get(parent["id"])
        assert (reply is not None) == parent["reply_planned"]
        if reply is None:
            continue
        assert parent["replied_at"] and parent["reply_message_id"] == reply["message_id"]
        assert reply["in_reply_to"] == parent["message_id"]
        sender = address[parent["from_account_id"]]
        got = _header(dovecot, sender, "in-reply-to", reply["message_id"])
        assert got == parent["message_id"]
    # DKIM: mail from the keyed domain carries a signature for it.
    signed = next(r for r in originals if address[r["from_account_id"]].endswith(DOMAINS[0]))
    receiver = address[signed["to_account_id"]]
    dkim = _header(dovecot, receiver, "dkim-signature", signed["message_id"])
    assert f"d={DOMAINS[0]}" in dkim.replace(" ", "")
    # The disabled account: no warmup mail to or from it, its mailbox untouched.
    assert not [r for r in rows if idle_id in (r["from_account_id"], r["to_account_id"])]
    assert _search(dovecot, idle.address, "mailbox", "INBOX", "all") == 0
    # Not campaign mail: no deliveries, no campaign counters.
    assert await app.db.fetchval("SELECT count(*) FROM email_deliveries") == 0
    assert await app.db.fetchval("SELECT count(*) FROM campaign_metrics") == 0
    # status --json agrees with what IMAP shows.
    code, out = await cli("warmup", "status", "--json")
    assert code == 0, out
    status: dict[str, Any] = {s["account"]: s for s in json.loads(out)}
    assert status[idle_id]["state"] == "disabled" and status[idle_id]["sent_today"] == 0
    for account in ids:
        s = status[account]
        assert s["quota_today"] == QUOTA and s["sent_today"] == QUOTA and s["day"] == 0
        sender = address[account]
        in_junk_box = _search(
            dovecot, boxes[3].address, "mailbox", "INBOX", "header", "from", sender
        )
        elsewhere = sum(
            _search(dovecot, b.address, "mailbox", "INBOX", "header", "from", sender)
            for b in boxes[:3]
        )
        assert s["spam"] == s["moved_to_inbox"] == in_junk_box
        assert s["inbox"] == elsewhere
        assert s["replied"] == sum(
            r["id"] in replies for r in originals if r["from_account_id"] == account
        )
        expected_pct = round(100.0 * s["inbox"] / (s["inbox"] + s["spam"]), 1)
        assert s["placement_pct_7d"] == expected_pct
    today = dt.datetime.now(dt.UTC).date()
    assert all(r["quota_day"] == today for r in rows)
    placements = await app.db.fetch(
        "SELECT payload->>'placement' AS p, count(*) AS n FROM events "
        "WHERE type = 'warmup.placement' GROUP BY 1"
    )
    assert {r["p"]: r["n"] for r in placements} == {
        "inbox": sum(r["folder_found"] == "inbox" for r in rows),
        "spam": sum(r["folder_found"] == "spam" for r in rows),
    }
    # Prometheus: sends, placements by folder, replies, the per-account inbox gauge.
    registry = app.metrics.registry
    assert registry.get_sample_value("warmup_sent_total") == len(rows)
    assert registry.get_sample_value("warmup_replies_total") == len(replies)
    for folder in ("inbox", "spam"):
        assert registry.get_sample_value("warmup_placement_total", {"folder": folder}) == sum(
            r["folder_found"] == folder for r in rows
        )
    gauge = registry.get_sample_value(
        "warmup_inbox_placement_ratio", {"tenant": TENANT, "account": ids[0]}
    )
    assert gauge is not None and round(100 * gauge, 1) == status[ids[0]]["placement_pct_7d"]
    # The HTTP view: placement per account per day, and the same status objects.
    http = web.Application()
    http.add_routes(routes(app, services))
    runner = web.AppRunner(http)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/warmup?tenant={TENANT}") as r,
        ):
            assert r.status == 200
            body = await r.json()
    finally:
        await runner.cleanup()
    by_day = {d["account"]: d for d in body["by_day"]}
    assert set(by_day) == set(ids)
    for account in ids:
        assert by_day[account]["inbox"] == status[account]["inbox"]
        assert by_day[account]["placement_pct"] == status[account]["placement_pct_7d"]
    assert {a["account"]: a for a in body["accounts"]}[ids[0]] == status[ids[0]]
