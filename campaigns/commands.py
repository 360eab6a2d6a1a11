"""``mailgate import FILE``, ``mailgate export`` and ``mailgate cleanup``.

``import`` and ``export`` enqueue the job (through the family's typed model) and follow its
progress (the ``progress`` field of the job hash) with a bar until it completes or fails;
``--no-wait`` prints the job id at once. ``cleanup`` runs the retention cleanup here (or,
with ``--dry-run``, only counts what would go).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from campaigns.sources import allowed_roots, under_roots
from gateway.app import App
from gateway.cli import Progress, run_with_app, settings_from_args
from gateway.errors import CliError
from gateway.jobs.contracts import EXPORT, IMPORT, ExportPayload, ImportPayload, Payload, describe
from gateway.jobs.contracts import encode_job as encode
from gateway.jobs.keys import job_key
from gateway.retention import cleanup, tenant_dirname
from gateway.settings import Settings

POLL_S = 0.5


def _mapping(items: list[str] | None) -> dict[str, str]:
    if not items:
        return {"col_0": "email", "col_1": "name"}
    out: dict[str, str] = {}
    for item in items:
        column, sep, field = item.partition("=")
        if not sep or not column or not field:
            raise CliError(f"--mapping needs COLUMN=FIELD (e.g. col_0=email), got {item!r}")
        out[column] = field
    return out


def _model(cls: type[Payload], data: dict[str, Any]) -> Payload:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise CliError(f"{describe(exc)} (see mailgate {sys.argv[1:2]} --help)") from None


async def follow(app: App, job_id: str, label: str, total: int) -> dict[str, Any]:
    """Poll the job hash until it is completed or failed; the result."""
    progress = Progress(total, label)
    done = 0
    try:
        while True:
            raw = await app.redis.hgetall(job_key(job_id))
            tracked = {_str(k): _str(v) for k, v in raw.items()}
            now = int(tracked.get("progress", "0") or 0)
            if now > done:
                progress.advance(now - done)
                done = now
            status = tracked.get("status")
            if status == "completed":
                result: dict[str, Any] = json.loads(tracked.get("result") or "{}")
                return result
            if status == "failed":
                error = tracked.get("error") or f"see mailgate jobs show {job_id}"
                raise CliError(f"job {job_id} failed: {error}")
            await asyncio.sleep(POLL_S)
    finally:
        progress.close()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _rows_estimate(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return 0


def _importable(path: Path, settings: Settings, tenant: str, job_id: str) -> Path:
    """``path`` when the daemon may read it there; otherwise a copy in
    ``data_dir/imports/<tenant>/`` (the daemon reads only its own directories and
    ``file_roots``, and may run as another user than the one who typed the command)."""
    if under_roots(path, allowed_roots(settings)):
        return path
    target = Path(settings.data_dir) / "imports" / tenant_dirname(tenant) / f"{job_id}.csv"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    except OSError as exc:
        raise CliError(
            f"cannot copy {path} into {target.parent}: {exc.strerror} (run as the daemon's "
            "user, or add the file's directory to MAILGATE_FILE_ROOTS)"
        ) from None
    print(
        f"copied {path} to {target} (the daemon reads only its allowed directories)",
        file=sys.stderr,
    )
    return target


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file).resolve()
    if not path.is_file():
        raise CliError(f"{args.file}: no such file (give the path of a CSV)")
    settings = settings_from_args(args)
    job_id = f"import-{uuid.uuid4().hex}"
    path = _importable(path, settings, args.tenant, job_id)
    payload = _model(
        ImportPayload,
        {
            "file_url": path.as_uri(),
            "tenant_id": args.tenant,
            "mapping": _mapping(args.mapping),
            "list_id": args.list,
            "has_header": args.has_header,
            "delimiter": args.delimiter,
        },
    )

    async def work(app: App) -> int:
        await app.redis.lpush(IMPORT, encode(IMPORT, payload, id=job_id))
        if args.no_wait:
            print(job_id)
            return 0
        total = _rows_estimate(path) - (1 if args.has_header else 0)
        result = await follow(app, job_id, "importing", total)
        print(json.dumps({"job_id": job_id, **result}, indent=2))
        return 0

    return run_with_app(settings, work)


def cmd_export(args: argparse.Namespace) -> int:
    payload = _model(
        ExportPayload,
        {
            k: v
            for k, v in {
                "tenant_id": args.tenant,
                "kind": args.kind,
                "list_id": args.list,
                "campaign_id": args.campaign,
                "format": args.format,
                "since": args.since,
                "until": args.until,
                "destination": Path(args.output).resolve().as_uri() if args.output else None,
            }.items()
            if v is not None
        },
    )
    job_id = f"export-{uuid.uuid4().hex}"
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        await app.redis.lpush(EXPORT, encode(EXPORT, payload, id=job_id))
        if args.no_wait:
            print(job_id)
            return 0
        result = await follow(app, job_id, "exporting", 0)
        print(json.dumps({"job_id": job_id, **result}, indent=2))
        return 0

    return run_with_app(settings, work)


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        t0 = time.perf_counter()
        counts = await cleanup(app.db, app.settings, tenant_id=args.tenant, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        for name, n in counts.items():
            print(f"{verb:>12} {n:>9}  {name}")
        print(f"({time.perf_counter() - t0:.1f} s)")
        return 0

    return run_with_app(settings, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import", help="import a CSV of contacts into a list (import.contacts)")
    p.add_argument(
        "file",
        help="path of the CSV file (copied into data_dir/imports when the daemon may not "
        "read it where it is)",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--list", help="contact_lists.id to add the contacts to (created if new)")
    p.add_argument(
        "--mapping",
        action="append",
        metavar="COLUMN=FIELD",
        help="col_N (or a header name) = email, name or any field (default: "
        "col_0=email col_1=name)",
    )
    p.add_argument("--has-header", action="store_true", help="the first row names the columns")
    p.add_argument("--delimiter", default=",")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", help="export a tenant's rows to a file (export.data)")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--kind", required=True, choices=["contacts", "deliveries", "messages", "suppressions"]
    )
    p.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    p.add_argument("--list", help="contacts of this list only")
    p.add_argument("--campaign", help="deliveries/messages of this campaign only")
    p.add_argument("--since", help="ISO-8601 time (inclusive)")
    p.add_argument("--until", help="ISO-8601 time (exclusive)")
    p.add_argument("--output", help="file to write (default: data_dir/exports/<tenant>/)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("cleanup", help="delete what is past retention (maintenance.cleanup)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--tenant", help="one tenant only")
    p.set_defaults(handler=cmd_cleanup)
