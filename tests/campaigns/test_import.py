"""import.contacts against real PostgreSQL and Redis: counts, list membership, progress,
the completion event, bad files, HTTP sources, and a SIGKILL halfway then a re-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from campaigns import ImportFileError
from campaigns.importer import Importer
from campaigns.sources import SourceUnavailable
from gateway.app import App
from gateway.jobs.contracts import IMPORT, ImportPayload, PayloadInvalid, family_of
from gateway.jobs.keys import job_key
from tests.campaigns.conftest import TENANT, write_csv

MAPPING = {"Email": "email", "Name": "name", "City": "city"}


def payload(url: str, **extra: Any) -> ImportPayload:
    fields: dict[str, Any] = {
        "file_url": url,
        "tenant_id": TENANT,
        "mapping": MAPPING,
        "has_header": True,
        "list_id": "list_1",
    }
    fields.update(extra)
    return ImportPayload.model_validate(fields)


async def contact_state(app: App) -> tuple[int, int, int]:
    """(contacts, list members, list member_count) of the tenant."""
    contacts = await app.db.fetchval("SELECT count(*) FROM contacts WHERE tenant_id = $1", TENANT)
    members = await app.db.fetchval(
        "SELECT count(*) FROM contact_list_members WHERE tenant_id = $1 AND list_id = 'list_1'",
        TENANT,
    )
    count = await app.db.fetchval("SELECT member_count FROM contact_lists WHERE id = 'list_1'")
    return contacts, members, count


async def test_import_counts_rows_lists_members_and_records_completion(
    app: App, tmp_path: Path
) -> None:
    """Invalid rows, in-file duplicates (across batches, other case) and an address that
    existed before are told apart; rows = imported + updated + invalid + duplicates; the
    list holds every valid address once; progress and the event are recorded."""
    path = tmp_path / "list.csv"
    valid, invalid, duplicates = write_csv(path, 2000)
    await app.db.execute(
        "INSERT INTO contacts (id, tenant_id, email, name) VALUES ('old', $1,"
        " 'user4@example.com', 'Old Name')",
        TENANT,
    )
    result = await Importer(app, "imp-1", payload(path.as_uri()), batch_rows=300).run()
    assert result["rows"] == 2000
    assert result["invalid"] == invalid == 100
    assert result["duplicates"] == duplicates > 0
    assert result["updated"] == 1
    assert result["imported"] == len(valid) - 1
    assert (
        result["rows"]
        == result["imported"] + result["updated"] + result["invalid"] + result["duplicates"]
    )
    assert result["list_id"] == "list_1"
    first = result["invalid_rows"][0]
    assert first == {"line": 21, "reason": "invalid address", "value": "broken19@@example"}
    assert len(result["invalid_rows"]) == 100
    assert await contact_state(app) == (len(valid), len(valid), len(valid))
    row = await app.db.fetchrow(
        "SELECT id, name, fields FROM contacts"
        " WHERE tenant_id = $1 AND email = 'user4@example.com'",
        TENANT,
    )
    assert row["id"] == "old" and row["name"] == "Name 4" and row["fields"] == {"city": "City4"}
    progress = await app.redis.hget(job_key("imp-1"), "progress")
    assert progress == b"2000"
    event = await app.db.fetchrow(
        "SELECT payload FROM events WHERE tenant_id = $1 AND type = 'import.completed'", TENANT
    )
    assert event["payload"]["imported"] == result["imported"]
    # The same job run again (a redelivery after it finished) changes nothing.
    again = await Importer(app, "imp-1", payload(path.as_uri()), batch_rows=300).run()
    assert again == result
    assert await contact_state(app) == (len(valid), len(valid), len(valid))


async def test_bad_files_fail_with_a_clear_error(app: App, tmp_path: Path) -> None:
    """Not UTF-8, not CSV (a NUL byte), a mapped column the header lacks, a col_N past the
    file's width: each fails the job permanently, naming the problem."""
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"email,name\r\nzoe@example.com,Zo\xe9\r\n")
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"email,name\r\na@example.com,\x00\x01\r\n")
    quotes = tmp_path / "quotes.csv"
    quotes.write_bytes(b'email,name\r\na@example.com,"Ann"x\r\n')
    good = tmp_path / "good.csv"
    good.write_bytes(b"email,name\r\na@example.com,Ann\r\n")
    cases = [
        (payload(latin.as_uri(), mapping={"email": "email"}), "not UTF-8"),
        (payload(nul.as_uri(), mapping={"email": "email"}), "NUL"),
        (payload(quotes.as_uri(), mapping={"email": "email"}), "not valid CSV at line 2"),
        (payload(good.as_uri(), mapping={"Phone": "email"}), "'Phone'"),
        (payload(good.as_uri(), mapping={"col_4": "email"}, has_header=False), "col_4"),
        (payload((tmp_path / "missing.csv").as_uri()), "cannot read"),
    ]
    for i, (bad, words) in enumerate(cases):
        with pytest.raises(ImportFileError, match=words):
            await Importer(app, f"bad-{i}", bad).run()
    with pytest.raises(PayloadInvalid, match="s3"):
        family_of(IMPORT).validate(
            {"file_url": "s3://uploads/list.csv", "tenant_id": TENANT, "mapping": MAPPING}
        )


async def test_http_source_is_streamed_and_errors_are_classified(app: App, tmp_path: Path) -> None:
    """An http:// file is read in chunks from a server (a fake of the internet); a 404 is a
    permanent error, a 503 a temporary one (retried), a redirect is not followed; a loopback
    server is refused unless MAILGATE_IMPORT_ALLOW_PRIVATE is set (the SSRF guard)."""
    path = tmp_path / "list.csv"
    valid, invalid, _ = write_csv(path, 500, header=False, duplicate_every=10**9)
    body = path.read_bytes()

    async def serve(request: web.Request) -> web.StreamResponse:
        if request.path == "/gone.csv":
            return web.Response(status=404)
        if request.path == "/busy.csv":
            return web.Response(status=503)
        if request.path == "/moved.csv":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(0, len(body), 777):  # chunk edges inside lines and CRLFs
            await response.write(body[i : i + 777])
        await response.write_eof()
        return response

    server = web.Server(serve)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        mapping = {"col_0": "email", "col_1": "name"}
        with pytest.raises(ImportFileError, match="private, loopback or link-local"):
            await Importer(app, "http-0", payload(f"{base}/list.csv", mapping=mapping)).run()
        app.settings = app.settings.model_copy(update={"import_allow_private": True})
        got = await Importer(
            app, "http-1", payload(f"{base}/list.csv", mapping=mapping, has_header=False)
        ).run()
        assert got["rows"] == 500 and got["invalid"] == invalid
        assert got["imported"] == len(valid)
        with pytest.raises(ImportFileError, match="404"):
            await Importer(app, "http-2", payload(f"{base}/gone.csv", mapping=mapping)).run()
        with pytest.raises(SourceUnavailable, match="503"):
            await Importer(app, "http-3", payload(f"{base}/busy.csv", mapping=mapping)).run()
        with pytest.raises(ImportFileError, match="redirect, not followed"):
            await Importer(app, "http-4", payload(f"{base}/moved.csv", mapping=mapping)).run()
    finally:
        await runner.cleanup()


async def test_files_outside_the_daemons_directories_are_refused_by_default(
    app: App, tmp_path: Path
) -> None:
    """With no file_roots, an import reads only data_dir/imports and data_dir/exports: a
    path elsewhere (or one that climbs out with ``..``, or a host file such as
    /proc/self/environ, whose lines would come back as invalid rows) is refused."""
    app.settings = app.settings.model_copy(update={"file_roots": []})
    imports = Path(app.settings.data_dir) / "imports"
    imports.mkdir(parents=True)
    inside = imports / "list.csv"
    valid, _, _ = write_csv(inside, 50, duplicate_every=10**9)
    outside = tmp_path / "list.csv"
    write_csv(outside, 50)
    climbing = imports / ".." / ".." / "list.csv"
    for n, url in enumerate(
        (outside.as_uri(), "file://" + str(climbing), "file:///proc/self/environ")
    ):
        with pytest.raises(ImportFileError, match="outside the allowed directories"):
            await Importer(app, f"out-{n}", payload(url)).run()
    got = await Importer(app, "in-1", payload(inside.as_uri())).run()
    assert got["imported"] == len(valid)


CHILD = Path(__file__).with_name("import_child.py")


async def test_import_killed_halfway_then_rerun_lands_every_row_once(
    app: App, tmp_path: Path
) -> None:
    """A worker process SIGKILLed mid-import, then the same job run again: every valid row
    once, exact counts, the list's member_count right."""
    path = tmp_path / "big.csv"
    valid, invalid, duplicates = write_csv(path, 20000)
    assert app.settings.database_url is not None and app.settings.redis_url is not None
    env = {
        **os.environ,
        "MAILGATE_DATABASE_URL": app.settings.database_url.get_secret_value(),
        "MAILGATE_REDIS_URL": app.settings.redis_url.get_secret_value(),
        "MAILGATE_SECRET_KEY": "test-secret-key-0123456789abcdef0123456789",
        "MAILGATE_DATA_DIR": str(tmp_path / "data"),
        "MAILGATE_FILE_ROOTS": str(tmp_path),
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), path.as_uri(), TENANT, "imp-kill"],
        env=env,
        cwd=Path(__file__).parents[2],
    )
    try:
        for _ in range(600):
            done = await app.db.fetchval(
                "SELECT rows_done FROM import_checkpoints WHERE job_id = 'imp-kill'"
            )
            if done and done >= 4000:
                break
            assert child.poll() is None, "the import child ended before it was killed"
            await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    halfway = await app.db.fetchval(
        "SELECT rows_done FROM import_checkpoints WHERE job_id = 'imp-kill'"
    )
    assert 4000 <= halfway < 20000
    result = await Importer(app, "imp-kill", payload(path.as_uri()), batch_rows=1000).run()
    assert result["rows"] == 20000
    assert result["invalid"] == invalid
    assert result["duplicates"] == duplicates
    assert result["imported"] == len(valid) and result["updated"] == 0
    assert await contact_state(app) == (len(valid), len(valid), len(valid))
