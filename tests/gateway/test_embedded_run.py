"""`mailgate run` with nothing configured: embedded PostgreSQL and Redis, /healthz within
60 s, the seed metrics, exit 0 on SIGTERM within 35 s with no server left, same data after a
restart; as root, from a virtualenv in a private (0700) directory, without changing the mode
of anything above the data directory. Runs the real console script in a subprocess, as a
new user would.

The data directories are under a private ``/tmp/mailgate-run-*`` folder of mode 0755, not
pytest's ``tmp_path``: pytest's base temp folder is 0700, and as root the embedded
PostgreSQL runs as ``nobody``, which must reach the data directory (mailgate no longer
opens up the directories above it)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import asyncpg
import pytest

from gateway.embedded import EmbeddedPostgres, free_port


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A private folder others may traverse (0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mailgate-run-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _env(tmp_path: Path, http_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_HTTP_LISTEN=f"127.0.0.1:{http_port}",
        MAILGATE_SMTP_LISTEN="127.0.0.1:0",
        MAILGATE_LOG_FORMAT="json",
    )
    return env


def _mailgate() -> list[str]:
    script = shutil.which("mailgate", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "gateway.cli"]


async def _wait_for(port: int, path: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until ``path`` answers 200; fails if the process exits or time runs out."""
    t0 = time.monotonic()
    last = "no answer"
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - t0 < timeout_s:
            assert proc.poll() is None, "mailgate run exited early"
            try:
                async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                    if r.status == 200:
                        return time.monotonic() - t0
                    last = f"{r.status} {await r.text()}"
            except aiohttp.ClientError as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
    raise AssertionError(f"{path} not 200 within {timeout_s} s: {last}")


async def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    return await _wait_for(port, "/healthz", proc, timeout_s)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Reap a process a failed assertion left running (no zombie, no Popen warning)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _server_processes(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(data_dir) in line]


async def _stop(proc: subprocess.Popen[bytes]) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 35)
    assert code == 0, f"exit code {code}"
    return time.monotonic() - t0


async def test_run_with_nothing_configured(run_dir: Path) -> None:
    """A fresh data dir: healthy, metrics, clean SIGTERM, no leftovers, data kept."""
    port = free_port()
    env = _env(run_dir, port)
    data_dir = run_dir / "data"
    with (run_dir / "run.log").open("wb") as log_file:
        await _run_twice(env, port, data_dir, log_file, run_dir)


def _modes(path: Path) -> dict[str, int]:
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


async def test_run_from_a_private_virtualenv_changes_no_mode_above_the_data_dir(
    run_dir: Path,
) -> None:
    """A checkout's virtualenv in a 0700 home (as /root is): `mailgate run` comes up on the
    embedded default (as root the server binaries are linked into the data dir, where
    `nobody` reaches them), and no directory above the data dir changed mode."""
    home = run_dir / "home"
    home.mkdir(mode=0o700)
    venv = home / "venv"
    # A hard-linked copy of this virtualenv: pgserver's binaries now live under a 0700 dir.
    if subprocess.run(["cp", "-al", sys.prefix, str(venv)], check=False).returncode != 0:
        subprocess.run(["cp", "-a", sys.prefix, str(venv)], check=True)
    before = _modes(home) | _modes(run_dir)
    port = free_port()
    env = _env(run_dir, port) | {"HOME": str(home)}
    argv = [str(venv / "bin" / "python"), "-m", "gateway.cli", "run"]
    with (run_dir / "run.log").open("wb") as log_file:
        proc = subprocess.Popen(argv, env=env, stdout=log_file, stderr=log_file, cwd=home)
        try:
            try:
                await _wait_healthy(port, proc, 60)
            except AssertionError:
                log_file.flush()
                raise AssertionError((run_dir / "run.log").read_text()[-3000:]) from None
            assert await _wait_for(port, "/readyz", proc, 30) < 30
            await _stop(proc)
        finally:
            _kill(proc)
    assert _modes(home) | _modes(run_dir) == before
    log_text = (run_dir / "run.log").read_text()
    if os.geteuid() == 0:
        assert "PostgreSQL binaries linked where the server's user can reach them" in log_text
        farm = run_dir / "data" / "postgres" / "pgbin"
        assert (farm / "pgserver" / "pginstall" / "bin" / "postgres").exists()
    assert _server_processes(run_dir / "data") == []


async def test_unreachable_data_dir_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    """As root, a data dir under a 0700 parent cannot be reached by the server's user:
    `mailgate run` exits 1 with one line naming the directory and the fix, no traceback, and
    the parent keeps its mode. (As another user the server runs as that user and starts.)"""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    env = _env(private, free_port())
    proc = await asyncio.to_thread(
        subprocess.run, [*_mailgate(), "run"], env=env, capture_output=True, text=True, timeout=90
    )
    if os.geteuid() != 0:
        return
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mailgate: the embedded PostgreSQL runs as 'nobody'")
    assert "MAILGATE_DATA_DIR" in lines[0] and "Traceback" not in proc.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


async def _run_twice(
    env: dict[str, str], port: int, data_dir: Path, log_file: IO[bytes], tmp_path: Path
) -> None:
    proc = subprocess.Popen([*_mailgate(), "run"], env=env, stdout=log_file, stderr=log_file)
    try:
        assert await _wait_healthy(port, proc, 60) < 60
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            metrics = await r.text()
        # Ready follows live: /healthz answers while components still start (the worker
        # last, after the job handlers' helpers), /readyz once all of them run.
        assert await _wait_for(port, "/readyz", proc, 30) < 30
        for name in ("jobs_completed_total", "jobs_failed_total", "job_duration_seconds"):
            assert name in metrics
        # Leave a mark in the embedded database.
        pg = EmbeddedPostgres(data_dir / "postgres")
        conn = await asyncpg.connect(pg.url)
        await conn.execute("INSERT INTO email_templates (id, tenant_id) VALUES ('tpl_1', 't1')")
        await conn.close()
        assert await _stop(proc) < 35
    finally:
        _kill(proc)
    log_text = (tmp_path / "run.log").read_text()
    assert "embedded PostgreSQL started" in log_text and "embedded Redis started" in log_text
    assert _server_processes(data_dir) == []

    proc = subprocess.Popen([*_mailgate(), "run"], env=env, stdout=log_file, stderr=log_file)
    try:
        await _wait_healthy(port, proc, 60)
        conn = await asyncpg.connect(EmbeddedPostgres(data_dir / "postgres").url)
        assert await conn.fetchval("SELECT tenant_id FROM email_templates WHERE id='tpl_1'") == "t1"
        await conn.close()
        await _stop(proc)
    finally:
        _kill(proc)
    assert _server_processes(data_dir) == []


async def test_parallel_migrate_commands(run_dir: Path) -> None:
    """Two `mailgate migrate` at once on the embedded default: one applies, one no-ops."""
    tmp_path = run_dir
    env = _env(tmp_path, free_port())
    procs = [
        subprocess.Popen(
            [*_mailgate(), "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [await asyncio.to_thread(p.communicate, timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stdout = sorted(o[0].decode() for o in outs)
    assert re.match(r"applied \d+ migration", stdout[0])
    assert stdout[1].startswith("schema up to date")
    assert _server_processes(tmp_path / "data") == []
