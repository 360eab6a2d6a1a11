"""A worker process for the SIGKILL test: runs one import slowly (a pause after each
batch's commit) until the test kills it. Arguments: file URL, tenant, job id."""

from __future__ import annotations

import asyncio
import sys

from campaigns.csvrows import Batch
from campaigns.importer import Importer
from gateway.app import open_app, open_urls
from gateway.jobs.contracts import ImportPayload
from gateway.settings import load_settings


class SlowImporter(Importer):
    async def _write(self, conn, batch: Batch) -> None:  # type: ignore[no-untyped-def]
        await super()._write(conn, batch)
        await asyncio.sleep(0.1)


async def main(url: str, tenant: str, job_id: str) -> None:
    settings = load_settings()
    payload = ImportPayload.model_validate(
        {
            "file_url": url,
            "tenant_id": tenant,
            "mapping": {"Email": "email", "Name": "name", "City": "city"},
            "has_header": True,
            "list_id": "list_1",
        }
    )
    async with open_urls(settings) as urls, open_app(settings, urls) as app:
        await SlowImporter(app, job_id, payload, batch_rows=1000).run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
