"""Group commit for every watcher of the process: batches that wait share one transaction.

A watcher hands a fetched and parsed batch to :meth:`Committer.commit` and, while it waits,
parses its next batch: PostgreSQL writes on its own core while the event loop parses.
Batches that arrive while the committers are busy are stored together by the next free
committer in ONE transaction (:func:`ingest.store.store_batch`, through the shared
:class:`~gateway.groupcommit.GroupCommit`): ten mailboxes receiving
mail at the same moment cost one commit, one fsync and a few statements instead of ten of
each, and at most ``committers`` pool connections are in use however many mailboxes there
are (a burst no longer opens a new pool connection per mailbox).

Order and exactly-once: a watcher waits for its batch's commit before handing over the
next, so each folder's batches commit in UID order and its sync position only moves past
committed messages. Should a shared transaction fail for something other than an outage,
each watcher's batch is stored again alone so that only the culprit fails. A waiter that is
cancelled does not cancel the commit (it may still commit; the position moves with it).
"""

from __future__ import annotations

import asyncpg

from gateway.groupcommit import GroupCommit
from gateway.storage import is_transient
from ingest.errors import StoreInterrupted
from ingest.store import Outcome, Pending, store_batch


def _one_folders_fault(exc: BaseException) -> bool:
    """A statement error (not an outage) may be one watcher's batch: store each alone."""
    return isinstance(exc, asyncpg.PostgresError) and not is_transient(exc)


def _raw_bytes(batch: list[Pending]) -> int:
    return sum(len(p.analysed.raw) for p in batch)


class Committer:
    """Stores batches for all watchers; at most ``committers`` transactions at once, each
    gathering waiting batches up to ``max_messages`` messages or ``max_bytes`` raw bytes
    (a :class:`~gateway.groupcommit.GroupCommit` whose items are watchers' batches)."""

    def __init__(
        self, db: asyncpg.Pool, *, committers: int, max_messages: int, max_bytes: int
    ) -> None:
        self.db = db
        self._group: GroupCommit[list[Pending], list[Outcome]] = GroupCommit(
            "ingest",
            self._store_many,
            one=self._one_transaction,
            concurrency=committers,
            max_items=max_messages,
            max_bytes=max_bytes,
            weight=len,
            size=_raw_bytes,
            isolate=_one_folders_fault,
            interrupted=lambda: StoreInterrupted("stopping before this batch was stored"),
        )

    async def commit(self, batch: list[Pending]) -> list[Outcome]:
        """Store ``batch`` (one folder, UID order); the outcome of each message, in order.
        Raises what storing raised (asyncpg/OS errors: the watcher's session retries)."""
        if not batch:
            return []
        return await self._group.submit(batch)

    @property
    def busy(self) -> bool:
        return self._group.busy

    async def close(self) -> None:
        """Cancel the commits in flight (they roll back: those messages are fetched again)."""
        await self._group.close()

    async def _store_many(self, batches: list[list[Pending]]) -> list[list[Outcome]]:
        """Several watchers' batches in ONE transaction; each one's outcomes back."""
        results = await self._one_transaction([p for batch in batches for p in batch])
        out, start = [], 0
        for batch in batches:
            out.append(results[start : start + len(batch)])
            start += len(batch)
        return out

    async def _one_transaction(self, batch: list[Pending]) -> list[Outcome]:
        async with self.db.acquire() as conn:
            return await store_batch(conn, batch)
