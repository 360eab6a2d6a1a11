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
    assert dup.returncode == 1 and "already has a mailbox" in dup.stdout

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
