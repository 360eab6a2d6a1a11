"""`mailgate accounts add|list|test|remove` as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.app import App
from gateway.embedded import free_port
from gateway.secretkey import CredentialBox
from gateway.settings import Settings
from tests.daemon import cli_env
from tests.ingest.helpers import new_mailbox
from tests.peers.dovecot import Dovecot


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    full = cli_env(settings, secret_key=secret)
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "accounts", *args],
        env=full,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_accounts_commands(
    app: App, settings: Settings, dovecot: Dovecot, tmp_path: Path
) -> None:
    """add (password from a file, sealed at rest, never printed), list, test (capabilities
    and folders; a refused connection exits 1 with the reason), remove."""
    box = new_mailbox(dovecot)
    secret = tmp_path / "pw"
    secret.write_text(box.password + "\n")
    common = ["--tenant", "t1", "--imap-host", dovecot.host, "--imap-security", "none"]
    added = _cli(
        settings, "add", *common, "--address", box.address, "--imap-port", str(dovecot.port),
        "--password-file", str(secret), "--folders", "INBOX",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    account_id = added.stdout.strip()
    stored = await app.db.fetchval(
        "SELECT imap_password_enc FROM email_accounts WHERE id = $1", account_id
    )
    assert box.password.encode() not in bytes(stored)
    assert CredentialBox(app.secret_key).open(bytes(stored)) == box.password

    listed = _cli(settings, "list", "--tenant", "t1")
    assert listed.returncode == 0 and account_id in listed.stdout and box.address in listed.stdout

    tested = _cli(settings, "test", "--tenant", "t1", account_id)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "IDLE" in tested.stdout and "INBOX" in tested.stdout
    for result in (added, listed, tested):
        assert box.password not in result.stdout + result.stderr

    dup = _cli(
        settings, "add", *common, "--address", box.address, "--imap-port", str(dovecot.port),
        "--password-env", "PW", PW="x",
    )  # fmt: skip
    assert dup.returncode == 1 and "already has a mailbox" in dup.stderr

    dead = _cli(
        settings, "add", *common, "--address", "dead@ingest.test", "--imap-port",
        str(free_port()), "--password-env", "PW", PW="x",
    )  # fmt: skip
    assert dead.returncode == 0
    failed = _cli(settings, "test", "--tenant", "t1", "dead@ingest.test")
    assert (
        failed.returncode == 1
        and "FAILED" in failed.stdout
        and "Connect call failed" in failed.stdout
    )

    assert _cli(settings, "remove", "--tenant", "t1", account_id).returncode == 0
    assert _cli(settings, "remove", "--tenant", "t1", account_id).returncode == 1
    assert await app.db.fetchval("SELECT count(*) FROM email_accounts") == 1


async def test_accounts_with_smtp_add_update_and_list(
    app: App, settings: Settings, tmp_path: Path
) -> None:
    """--smtp-* options: the SMTP password is sealed like the IMAP one, `update` changes
    only what it is given, `list` shows both endpoints and never a secret."""
    secret = tmp_path / "smtp-pw"
    secret.write_text("smtp-s3cret\n")
    added = _cli(
        settings, "add", "--tenant", "t1", "--address", "out@ingest.test",
        "--smtp-host", "smtp.ingest.test", "--smtp-port", "587",
        "--smtp-password-file", str(secret),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    account_id = added.stdout.strip()
    row = await app.db.fetchrow("SELECT * FROM email_accounts WHERE id = $1", account_id)
    assert row["imap_host"] is None and row["smtp_host"] == "smtp.ingest.test"
    assert row["smtp_username"] == "out@ingest.test"
    assert b"smtp-s3cret" not in bytes(row["smtp_password_enc"])
    assert CredentialBox(app.secret_key).open(bytes(row["smtp_password_enc"])) == "smtp-s3cret"

    updated = _cli(
        settings, "update", "--tenant", "t1", "out@ingest.test", "--smtp-security", "tls",
        "--smtp-port", "465", "--smtp-password-env", "NEWPW", NEWPW="rotated-pw",
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    row = await app.db.fetchrow("SELECT * FROM email_accounts WHERE id = $1", account_id)
    assert (row["smtp_host"], row["smtp_port"], row["smtp_security"]) == (
        "smtp.ingest.test", 465, "tls",
    )  # fmt: skip
    assert CredentialBox(app.secret_key).open(bytes(row["smtp_password_enc"])) == "rotated-pw"

    listed = _cli(settings, "list", "--tenant", "t1")
    assert "smtp.ingest.test:465/tls" in listed.stdout
    for result in (added, updated, listed):
        assert "smtp-s3cret" not in result.stdout + result.stderr
        assert "rotated-pw" not in result.stdout + result.stderr

    bad = _cli(settings, "update", "--tenant", "t1", "out@ingest.test", "--smtp-port", "0")
    assert bad.returncode == 2 and "--smtp-port 0 is out of range" in bad.stderr
    missing = _cli(settings, "update", "--tenant", "t1", "nobody@x.test", "--smtp-port", "25")
    assert missing.returncode == 1 and "has no mailbox 'nobody@x.test'" in missing.stderr
    empty = _cli(settings, "list", "--tenant", "t9")
    assert empty.stdout.strip().startswith("no mailboxes for tenant t9")
