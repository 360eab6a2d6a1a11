"""Benchmark of the platform's jobs (issue 12): import throughput and memory, fan-out rate.

(a) Import a generated CSV (default 1,000,000 rows, 5 % invalid, 5 % duplicates) with the
    import.contacts code (streamed, batched COPY + upsert, list membership, checkpoints):
    rows/s and the growth of this process's peak RSS during the import (VmHWM after a
    reset through /proc/self/clear_refs), against PostgreSQL's own ``COPY`` of the same
    file into a bare table in the same run (the ratio; target >= 0.3), and against a
    second baseline: ``COPY`` of the same file, deduplicated in advance on lower(email)
    (so COPY does not fail), into a table with the unique indexes the import must keep
    (contacts' primary key, the same md5 id, and unique (tenant_id, lower(email))), no
    conflict handling: the structural lower bound of any import that keeps those indexes.
(b) Fan out a campaign of 100,000 contacts into email.send jobs (campaign.process):
    jobs created per second (target >= 20,000/s) and peak RSS growth.

Runs on embedded PostgreSQL and Redis (or MAILGATE_DATABASE_URL / MAILGATE_REDIS_URL).
Prints figures, then one JSON line (the last line)::

    .venv/bin/python bench/platform_jobs.py [--rows 1000000] [--contacts 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns.fanout import Fanout
from campaigns.importer import Importer
from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedServers
from gateway.jobs import DeferJob
from gateway.jobs.contracts import EMAIL_SENDING, CampaignPayload, ImportPayload
from gateway.settings import load_settings
from gateway.storage import connect, migrate

TENANT = "bench"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux); the RSS now, in KB."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def generate(path: Path, rows: int) -> tuple[int, int]:
    """``rows`` rows (header + email,name,city): every 20th invalid, every 20th a
    duplicate of an earlier address. (invalid, duplicates)."""
    invalid = duplicates = 0
    with path.open("w", newline="") as out:
        out.write("email,name,city\n")
        lines = []
        for i in range(rows):
            if i % 20 == 19:
                email = f"broken{i}@@example"
                invalid += 1
            elif i % 20 == 5 and i >= 20:
                email = f"User{i - 2}@Example{(i - 2) % 97}.com"
                duplicates += 1
            else:
                email = f"user{i}@example{i % 97}.com"
            lines.append(f"{email},Name {i},City{i % 13}\n")
            if len(lines) >= 10000:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    return invalid, duplicates


async def bench_copy(app: App, path: Path) -> float:
    """PostgreSQL's own COPY of the file into a bare table: seconds."""
    async with app.db.acquire() as conn:
        await conn.execute("DROP TABLE IF EXISTS bare_copy")
        await conn.execute("CREATE TABLE bare_copy (email text, name text, city text)")
        t0 = time.perf_counter()
        await conn.copy_to_table("bare_copy", source=str(path), format="csv", header=True)
        elapsed = time.perf_counter() - t0
        await conn.execute("DROP TABLE bare_copy")
    return elapsed


def deduplicate(path: Path, out_path: Path) -> int:
    """``path`` without the rows whose lower(email) an earlier row has (header kept): what
    a COPY into the indexed table can take without failing. Rows written."""
    seen: set[str] = set()
    kept = 0
    with path.open(newline="") as src, out_path.open("w", newline="") as out:
        out.write(src.readline())
        lines = []
        for line in src:
            key = line.split(",", 1)[0].lower()
            if key in seen:
                continue
            seen.add(key)
            lines.append(line)
            kept += 1
            if len(lines) >= 10000:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    return kept


async def bench_indexed_copy(app: App, path: Path) -> float:
    """PostgreSQL's own COPY of the (deduplicated) file into a table with contacts' unique
    indexes: the primary key on the id (derived as the import derives it, a generated
    column) and unique (tenant_id, lower(email)); no conflict handling. Seconds."""
    async with app.db.acquire() as conn:
        await conn.execute("DROP TABLE IF EXISTS indexed_copy")
        await conn.execute(
            "CREATE TABLE indexed_copy ("
            " id text GENERATED ALWAYS AS"
            f" ('ct_' || substr(md5('{TENANT}:' || lower(email)), 1, 24)) STORED PRIMARY KEY,"
            f" tenant_id text NOT NULL DEFAULT '{TENANT}',"
            " email text NOT NULL, name text, city text)"
        )
        await conn.execute(
            "CREATE UNIQUE INDEX indexed_copy_tenant_email ON indexed_copy"
            " (tenant_id, lower(email))"
        )
        t0 = time.perf_counter()
        await conn.copy_to_table(
            "indexed_copy",
            source=str(path),
            columns=["email", "name", "city"],
            format="csv",
            header=True,
        )
        elapsed = time.perf_counter() - t0
        await conn.execute("DROP TABLE indexed_copy")
    return elapsed


async def bench_import(app: App, path: Path) -> dict[str, Any]:
    payload = ImportPayload(
        file_url=path.as_uri(),
        tenant_id=TENANT,
        mapping={"email": "email", "name": "name", "city": "city"},
        has_header=True,
        list_id="bench_list",
    )
    base_kb = reset_peak()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    result = await Importer(app, f"bench-import-{time.time_ns()}", payload).run()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak_kb = _status_kb("VmHWM")
    return {
        "seconds": elapsed,
        "rows_per_s": result["rows"] / elapsed,
        "cpu_s": cpu,
        "peak_rss_growth_mb": (peak_kb - base_kb) / 1024,
        "result": {k: v for k, v in result.items() if k != "invalid_rows"},
    }


async def bench_fanout(app: App, contacts: int) -> dict[str, Any]:
    async with app.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO contact_lists (id, tenant_id) VALUES ('fan_list', $1)", TENANT
        )
        await conn.execute(
            "INSERT INTO contacts (id, tenant_id, email) SELECT 'f' || lpad(i::text, 7, '0'),"
            " $1, 'fan' || i || '@example.org' FROM generate_series(1, $2) i",
            TENANT,
            contacts,
        )
        await conn.execute(
            "INSERT INTO contact_list_members (tenant_id, list_id, contact_id)"
            " SELECT $1, 'fan_list', 'f' || lpad(i::text, 7, '0') FROM generate_series(1, $2) i",
            TENANT,
            contacts,
        )
        await conn.execute(
            "INSERT INTO campaigns (id, tenant_id, status, list_id) VALUES"
            " ('fan_camp', $1, 'scheduled', 'fan_list')",
            TENANT,
        )
    await app.redis.delete(EMAIL_SENDING)
    base_kb = reset_peak()
    t0 = time.perf_counter()
    # DeferJob: pushed, now waiting for the sends, which this benchmark does not run.
    with contextlib.suppress(DeferJob):
        await Fanout(
            app, "bench-fan", CampaignPayload(campaign_id="fan_camp", tenant_id=TENANT)
        ).run()
    elapsed = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM")
    queued = await app.redis.llen(EMAIL_SENDING)
    await app.redis.delete(EMAIL_SENDING)
    return {
        "seconds": elapsed,
        "jobs_per_s": queued / elapsed,
        "queued": queued,
        "peak_rss_growth_mb": (peak_kb - base_kb) / 1024,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="mailgate-bench-platform-")
    db_url = os.environ.get("MAILGATE_DATABASE_URL")
    redis_url = os.environ.get("MAILGATE_REDIS_URL")
    servers = EmbeddedServers(Path(tmp), postgres=db_url is None, redis=redis_url is None)
    emb_db, emb_redis = await asyncio.to_thread(servers.start)
    db_url = db_url or emb_db
    redis_url = redis_url or emb_redis
    assert db_url and redis_url
    try:
        conn = await connect(db_url)
        await migrate(conn)
        await conn.close()
        settings = load_settings(
            database_url=db_url,
            redis_url=redis_url,
            data_dir=Path(tmp) / "data",
            secret_key="b" * 40,
            log_level="WARNING",
            file_roots=[tmp],  # the generated files (imports read only allowed directories)
        )
        path = Path(tmp) / "contacts.csv"
        t0 = time.perf_counter()
        invalid, duplicates = generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.rows} rows ({size_mb:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        dedup_path = Path(tmp) / "contacts-dedup.csv"
        dedup_rows = deduplicate(path, dedup_path)
        async with open_app(settings, Urls(db_url, redis_url)) as app:
            copy_s = await bench_copy(app, path)
            copy_rate = args.rows / copy_s
            print(
                f"(a) PostgreSQL COPY into a bare table:  {copy_rate:10.0f} rows/s ({copy_s:.2f} s)"
            )
            icopy_s = await bench_indexed_copy(app, dedup_path)
            icopy_rate = dedup_rows / icopy_s
            print(
                f"(a) COPY into a table with contacts' unique indexes: {icopy_rate:10.0f} rows/s "
                f"({dedup_rows} deduplicated rows in {icopy_s:.2f} s)"
            )
            imp = await bench_import(app, path)
            r = imp["result"]
            assert r["invalid"] == invalid and r["duplicates"] == duplicates, r
            print(
                f"(a) import.contacts:                    {imp['rows_per_s']:10.0f} rows/s "
                f"({imp['seconds']:.2f} s, CPU {imp['cpu_s']:.1f} s, "
                f"peak RSS +{imp['peak_rss_growth_mb']:.0f} MB)"
            )
            print(f"    result: {r}")
            ratio = imp["rows_per_s"] / copy_rate
            iratio = imp["rows_per_s"] / icopy_rate
            print(f"    ratio import / bare COPY = {ratio:.3f} (target >= 0.3)")
            print(f"    ratio import / indexed COPY = {iratio:.3f}")
            print(
                f"    ratio indexed COPY / bare COPY = {icopy_rate / copy_rate:.3f}"
                " (the most any import keeping those indexes could reach against bare COPY)"
            )
            fan = await bench_fanout(app, args.contacts)
            print(
                f"(b) campaign.process fan-out:           {fan['jobs_per_s']:10.0f} jobs/s "
                f"({fan['queued']} jobs in {fan['seconds']:.2f} s, "
                f"peak RSS +{fan['peak_rss_growth_mb']:.0f} MB)"
            )
        return {
            "rows": args.rows,
            "copy_rows_per_s": round(copy_rate),
            "copy_s": round(copy_s, 2),
            "import_rows_per_s": round(imp["rows_per_s"]),
            "import_vs_copy": round(ratio, 3),
            "indexed_copy_rows": dedup_rows,
            "indexed_copy_rows_per_s": round(icopy_rate),
            "indexed_copy_s": round(icopy_s, 2),
            "import_s": round(imp["seconds"], 2),
            "import_vs_indexed_copy": round(iratio, 3),
            "indexed_copy_vs_copy": round(icopy_rate / copy_rate, 3),
            "import_peak_rss_growth_mb": round(imp["peak_rss_growth_mb"], 1),
            "import_cpu_s": round(imp["cpu_s"], 1),
            "contacts": args.contacts,
            "fanout_jobs_per_s": round(fan["jobs_per_s"]),
            "fanout_peak_rss_growth_mb": round(fan["peak_rss_growth_mb"], 1),
        }
    finally:
        await asyncio.to_thread(servers.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    figures = asyncio.run(main(parser.parse_args()))
    print(json.dumps(figures))
