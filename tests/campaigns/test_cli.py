"""`mailgate import`, `mailgate export` and `mailgate cleanup` through the real CLI in a
subprocess, with a worker in the test running the jobs they enqueue."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import App
from gateway.jobs.handlers import build, discover
from gateway.jobs.worker import Worker
from gateway.services import Services
from gateway.settings import Settings
from tests.campaigns.conftest import TENANT, write_csv
from tests.daemon import cli_env


async def mailgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
async def worker(app: App, services: Services) -> AsyncIterator[Worker]:
    w = Worker(app, build(app, services, discover()))
    await w.start()
    yield w
    await w.stop(asyncio.get_running_loop().time() + 5)


async def test_import_export_and_cleanup_commands(
    app: App, settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    """import follows the job to its result; --no-wait prints the id at once; export
    prints the file's path and rows; cleanup --dry-run counts; bad input is one line."""
    env = cli_env(settings, secret_key="test-secret-key-0123456789abcdef0123456789")
    path = tmp_path / "in.csv"
    valid, invalid, _ = write_csv(path, 200)
    args = ["import", str(path), "--tenant", TENANT, "--list", "l1", "--has-header"]
    mapping = ["--mapping", "Email=email", "--mapping", "Name=name"]
    done = await mailgate(env, *args, *mapping)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["imported"] == len(valid) and result["invalid"] == invalid
    # Where the daemon may not read the file (no file_roots: only its own directories), the
    # command copies it into data_dir/imports/<tenant>/ and the job reads the copy.
    confined = {k: v for k, v in env.items() if k != "MAILGATE_FILE_ROOTS"}
    copied = await mailgate(confined, *args, *mapping)
    assert copied.returncode == 0, copied.stderr
    assert "copied" in copied.stderr and json.loads(copied.stdout)["rows"] == 200
    (copy,) = (settings.data_dir / "imports" / TENANT).iterdir()
    assert copy.read_bytes() == path.read_bytes()
    queued = await mailgate(env, *args, *mapping, "--no-wait")
    assert queued.returncode == 0 and queued.stdout.strip().startswith("import-")
    exported = await mailgate(
        env, "export", "--tenant", TENANT, "--kind", "contacts", "--list", "l1"
    )
    assert exported.returncode == 0, exported.stderr
    out = json.loads(exported.stdout)
    assert out["rows"] == len(valid) and Path(out["path"]).name.endswith(".csv")
    dry = await mailgate(env, "cleanup", "--dry-run")
    assert dry.returncode == 0 and "would delete" in dry.stdout and "email_content" in dry.stdout
    bad = await mailgate(env, "import", str(tmp_path / "nope.csv"), "--tenant", TENANT)
    assert bad.returncode != 0 and bad.stderr.startswith("mailgate: ")
