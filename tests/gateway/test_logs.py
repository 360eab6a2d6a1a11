"""Logging: JSON lines off a terminal, bound context per task, secrets kept out."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from gateway.logs import bind, setup_logging


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_context_is_bound_per_task() -> None:
    """Two concurrent tasks each log with their own job id; nothing leaks after the block."""
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    log = logging.getLogger("test.logs")

    async def unit(job: str) -> None:
        with bind(job_id=job, tenant_id="t1"):
            await asyncio.sleep(0)
            log.info("working", extra={"step": 1})

    await asyncio.gather(unit("j1"), unit("j2"))
    log.info("outside")
    records = _records(stream)
    assert {r["job_id"] for r in records if r["msg"] == "working"} == {"j1", "j2"}
    assert all(r["tenant_id"] == "t1" and r["step"] == 1 for r in records if r["msg"] == "working")
    outside = next(r for r in records if r["msg"] == "outside")
    assert "job_id" not in outside
    assert outside["level"] == "info" and outside["logger"] == "test.logs"


def test_text_format_is_readable() -> None:
    """The terminal format is one readable line with key=value context."""
    stream = io.StringIO()
    setup_logging("INFO", "text", stream)
    with bind(account="acct_1"):
        logging.getLogger("t").warning("hello %s", "world")
    line = stream.getvalue().strip()
    assert "WARNING" in line and "hello world" in line and "account=acct_1" in line
    assert not line.startswith("{")
