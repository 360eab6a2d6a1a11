"""The README's "First ten minutes" section, run as written against a `mailgate run` on the
embedded default: a mailbox added with IMAP and SMTP, a template, one message sent through
the queue and received by the local SMTP server, the job seen completed, a bounce
classified. Only the fixed ports are swapped for free ones (tests run side by side)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.embedded import free_port
from tests.gateway.test_embedded_run import _kill, _stop, _wait_for

ROOT = Path(__file__).resolve().parents[2]


def readme_walkthrough() -> str:
    """The shell block of the README's "First ten minutes" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## First ten minutes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section should have one shell block"
    return str(blocks[0])


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailgate-readme-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_first_ten_minutes_work_as_written(run_dir: Path) -> None:
    """Every command of the section exits 0 and does what the README says it does."""
    http_port, smtp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(
        MAILGATE_DATA_DIR=str(run_dir / "data"),
        MAILGATE_HTTP_LISTEN=f"127.0.0.1:{http_port}",
        MAILGATE_SMTP_LISTEN="127.0.0.1:0",
        # The walkthrough's IMAP host does not exist: start its watcher late, quietly.
        MAILGATE_INGEST_START_STAGGER_S="600",
    )
    script = readme_walkthrough()
    assert "127.0.0.1:8025" in script and "2526" in script
    script = script.replace("127.0.0.1:8025", f"127.0.0.1:{http_port}")
    script = script.replace("2526", str(smtp_port))
    # `. .venv/bin/activate`: the virtualenv this test runs in.
    script = script.replace(".venv/bin/activate", f"{sys.prefix}/bin/activate")
    log = (run_dir / "run.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run"], env=env, stdout=log, stderr=log
    )
    shell: subprocess.Popen[str] | None = None
    try:
        await _wait_for(http_port, "/readyz", daemon, 60)
        shell = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the background aiosmtpd is killed with its group
        )
        # The background aiosmtpd keeps the output pipe open: wait for the shell itself,
        # stop what it left running, then read everything.
        code = await asyncio.to_thread(shell.wait, 120)
        os.killpg(shell.pid, signal.SIGTERM)
        out, _ = await asyncio.to_thread(shell.communicate, timeout=30)
        assert code == 0, out
        # The SMTP server printed the message; the job completed; the bounce classified.
        assert "Subject: Hello Bob" in out and "Hi Bob, welcome aboard." in out, out
        assert re.search(r"queue:email-sending\s+completed\s+1/5", out), out
        assert re.search(r"dsn\s+bob@example\.net\s+hard\s+userunknown\s+5\.1\.1", out), out
        assert re.search(r"acct_\w+\s+demo\s+alice@example\.com\s+imap\.example\.com:993/tls"
                         rf"\s+127\.0\.0\.1:{smtp_port}/none", out), out  # fmt: skip
        assert "change-me" not in out
        await _stop(daemon)
    finally:
        if shell is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
            if shell.poll() is None:
                shell.kill()
                shell.wait(10)
        _kill(daemon)
        log.close()
