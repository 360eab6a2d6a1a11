"""The Mailu recipe (docs/mailu.md), tested with what runs here: a real Postfix configured with
the recipe's own lines relays a bounce for the bounce domain to the real listener, and a
real Dovecot with the recipe's master-user lines lets mailgate's IMAP client in as any user.
The lines are read from the recipe files, so the docs cannot drift from what was tested."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import yaml

from bounces.intake import Intake
from bounces.listener import Listener
from bounces.metrics import METRICS
from gateway.app import App
from gateway.imapendpoint import Endpoint
from gateway.services import Services
from ingest.imap import ImapSession
from tests.daemon import poll
from tests.peers.dovecot import Dovecot
from tests.peers.fixtures import private_dir, require_binary

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "docs" / "mailu"
DOC = ROOT / "docs" / "mailu.md"
OVERRIDE = ROOT / "docker" / "mailu.override.yaml"
BOUNCE_DOMAIN = "bounces.example.com"


def _lines(path: Path) -> list[str]:
    """A recipe file's settings: without comments and blank lines."""
    return [
        line
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _without_mailu_lookups(line: str) -> str:
    """A postfix.cf line without Mailu's own ${podop} tables (no Mailu admin runs here)."""
    name, _, value = line.partition(" = ")
    kept = [v.strip() for v in value.split(",") if "${podop}" not in v]
    return f"{name} = {', '.join(kept)}"


async def _send_null_sender(port: int, recipient: str, message: bytes) -> None:
    """A bounce as MTAs send it: MAIL FROM:<> from 127.0.0.2 (not in mynetworks)."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, source_address=("127.0.0.2", 0), start_tls=False
    )
    await smtp.connect()
    try:
        await smtp.ehlo()
        await smtp.mail("")
        await smtp.rcpt(recipient)
        await smtp.data(message)
    finally:
        await smtp.quit()


def test_the_page_shows_the_lines_of_the_files() -> None:
    """docs/mailu.md quotes every line of postfix.cf, mailgate.transport and dovecot.conf."""
    doc = DOC.read_text()
    for path in (
        RECIPE / "overrides/postfix/postfix.cf",
        RECIPE / "overrides/postfix/mailgate.transport",
        RECIPE / "overrides/dovecot/dovecot.conf",
    ):
        for line in _lines(path):
            assert line in doc, f"{path.name}: {line!r} is not in docs/mailu.md"


def test_override_joins_mailus_network_at_the_exempted_address() -> None:
    """mailgate is on Mailu's default network at the address the rate-limit exemption names,
    publishes no port on the host, runs non-root and read-only, and the transport's host
    name and port are the service's name and listener port."""
    service = yaml.safe_load(OVERRIDE.read_text())["services"]["mailgate"]
    address = service["networks"]["default"]["ipv4_address"]
    assert f"AUTH_RATELIMIT_EXEMPTION={address}/32" in DOC.read_text()
    assert "ports" not in service
    assert service["read_only"] is True and service["user"].split(":")[0] != "0"
    listen = service["environment"]["MAILGATE_SMTP_LISTEN"]
    (route,) = _lines(RECIPE / "overrides/postfix/mailgate.transport")
    assert route.split() == [BOUNCE_DOMAIN, f"smtp:[mailgate]:{listen.rsplit(':', 1)[1]}"]
    assert service["environment"]["MAILGATE_BOUNCE_DOMAINS"] == BOUNCE_DOMAIN


async def test_postfix_with_the_recipe_lines_relays_the_bounce_domain_to_the_listener(
    app: App, services: Services, postfix_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Postfix runs with postfix.cf's relay_domains and transport_maps (applied with postconf
    -e, as Mailu does) and mailgate.transport as its table; a bounce for the bounce domain
    from a client outside mynetworks is accepted and stored by the listener; mail for any
    other domain is refused (no relay)."""
    app.settings = app.settings.model_copy(update={"bounce_domains": [BOUNCE_DOMAIN]})
    listener = Listener(app, Intake(app), services.get(METRICS))
    await listener.start()
    try:
        table = tmp_path / "mailgate.transport"
        table.write_text(
            "".join(
                line.replace("[mailgate]:2525", f"[127.0.0.1]:{listener.port}") + "\n"
                for line in _lines(RECIPE / "overrides/postfix/mailgate.transport")
            )
        )
        await asyncio.to_thread(table.chmod, 0o644)
        await asyncio.to_thread(tmp_path.chmod, 0o755)
        recipe = [
            _without_mailu_lookups(line).replace("/overrides/mailgate.transport", str(table))
            for line in _lines(RECIPE / "overrides/postfix/postfix.cf")
        ]
        assert recipe == [
            f"relay_domains = {BOUNCE_DOMAIN}",
            f"transport_maps = texthash:{table}",
        ]
        # Only 127.0.0.1 is "our network": the test client (127.0.0.2) is the internet.
        postfix = postfix_factory(postconf_lines=[*recipe, "mynetworks = 127.0.0.1/32"])
        dsn = (
            b"From: MAILER-DAEMON@mx.remote.test\r\nTo: b+tok@bounces.example.com\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
            b"Content-Type: text/plain\r\n\r\nThe mail to x@remote.test could not be delivered.\r\n"
        )
        await _send_null_sender(postfix.port, f"b+tok@{BOUNCE_DOMAIN}", dsn)
        row = await poll(
            lambda: app.db.fetchrow(
                "SELECT r.rcpt_tos, r.peer FROM bounce_receipts r "
                "JOIN email_messages m ON m.storage_key = r.storage_key"
            ),
            lambda r: r is not None,
            30,
        )
        assert row["rcpt_tos"] == [f"b+tok@{BOUNCE_DOMAIN}"]
        assert row["peer"].startswith("127.0.0.1")  # relayed by Postfix, not sent directly
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await _send_null_sender(postfix.port, "someone@elsewhere.test", dsn)
        assert "Relay access denied" in str(refused.value)
    finally:
        await listener.stop(asyncio.get_running_loop().time() + 5)


async def test_dovecot_with_the_recipe_master_user_serves_mailgate(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Dovecot runs with dovecot.conf's master passdb (SHA512-CRYPT, pass = yes); mailgate's
    IMAP client logs in as alice*mailgate with the master password and sees alice's mail."""
    require_binary("dovecot")
    doveadm = require_binary("doveadm")
    path = private_dir("dovecot")
    master_password = "mailu-master-" + path.name[-6:]
    hashed = subprocess.run(
        [doveadm, "pw", "-s", "SHA512-CRYPT", "-p", master_password],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    users = path / "recipe"
    users.mkdir()
    users.chmod(0o755)
    (users / "master-users").write_text(f"mailgate:{hashed}\n")
    (users / "master-users").chmod(0o644)
    conf = "\n".join(_lines(RECIPE / "overrides/dovecot/dovecot.conf"))
    assert "master = yes" in conf and "auth_master_user_separator = *" in conf
    server = Dovecot(
        path, master_conf=conf.replace("/overrides/master-users", str(users / "master-users"))
    )
    server.add_user("alice@example.test", "alice-own-password")
    await asyncio.to_thread(server.start)
    try:
        message = b"From: a@b.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"
        await asyncio.to_thread(
            server.doveadm, "save", "-u", "alice@example.test", "-m", "INBOX", input_bytes=message
        )
        session = await ImapSession.open(
            Endpoint(
                server.host,
                server.port,
                "none",
                "alice@example.test",
                master_password,
                master_user="mailgate",
            ),
            connect_timeout_s=10,
            command_timeout_s=10,
        )
        try:
            info = await session.select("INBOX")
        finally:
            await session.logout()
        assert info.exists == 1
        log = server.log_path.read_text()
        assert re.search(r"alice@example\.test", log) is not None
    finally:
        await asyncio.to_thread(server.stop)
