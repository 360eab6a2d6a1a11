"""The platform's campaign jobs (issue 12): contact import, data export, campaign fan-out
and daily analytics. A sibling of ``ingest/``, ``bounces/`` and ``delivery/``: it meets them
only through jobs and the database, and is found through entry points.

Exception tree::

    CampaignJobError            (gateway.jobs.PermanentJobError: the job cannot succeed)
    └── ImportFileError         the file is not what an import needs (encoding, CSV, mapping)
"""

from __future__ import annotations

from gateway.jobs import PermanentJobError


class CampaignJobError(PermanentJobError):
    """A campaign job that cannot succeed as given (dead-lettered with this message)."""


class ImportFileError(CampaignJobError):
    """The file of an import is unusable: not UTF-8, not CSV, or the mapping names a column
    the file does not have. Says where (line) and what to fix."""
