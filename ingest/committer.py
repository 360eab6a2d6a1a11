"""Group commit for every watcher of the process: batches that wait share one transaction.

A watcher hands a fetched and parsed batch to :meth:`Committer.commit` and, while it waits,
parses its next batch: PostgreSQL writes on its own core while the event loop parses.
Batches that arrive while the committers are busy are stored together by the next free
committer in ONE transaction (:func:`ingest.store.store_batch`): ten mailboxes receiving
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

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from gateway.storage import is_transient
from ingest.errors import StoreInterrupted
from ingest.store import Outcome, Pending, store_batch

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    batch: list[Pending]
    size: int
    future: asyncio.Future[list[Outcome]]

    def resolve(self, result: list[Outcome] | BaseException) -> None:
        if self.future.done():  # the watcher stopped waiting
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


class Committer:
    """Stores batches for all watchers; at most ``committers`` transactions at once, each
    gathering waiting batches up to ``max_messages`` messages or ``max_bytes`` raw bytes."""

    def __init__(
        self, db: asyncpg.Pool, *, committers: int, max_messages: int, max_bytes: int
    ) -> None:
        self.db = db
        self.committers = committers
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._waiting: list[_Waiting] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def commit(self, batch: list[Pending]) -> list[Outcome]:
        """Store ``batch`` (one folder, UID order); the outcome of each message, in order.
        Raises what storing raised (asyncpg/OS errors: the watcher's session retries)."""
        if not batch:
            return []
        size = sum(len(p.analysed.raw) for p in batch)
        item = _Waiting(batch, size, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        if len(self._tasks) < self.committers:
            task = asyncio.create_task(self._drain(), name="ingest-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await item.future

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._tasks)

    async def close(self) -> None:
        """Cancel the commits in flight (they roll back: those messages are fetched again)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for item in self._waiting:
            item.resolve(StoreInterrupted("stopping before this batch was stored"))
        self._waiting.clear()

    def _take(self) -> list[_Waiting]:
        """Waiting batches for one transaction: at least one, then while under the caps."""
        group = [self._waiting.pop(0)]
        count, size = len(group[0].batch), group[0].size
        while self._waiting:
            nxt = self._waiting[0]
            if count + len(nxt.batch) > self.max_messages or size + nxt.size > self.max_bytes:
                break
            group.append(self._waiting.pop(0))
            count, size = count + len(nxt.batch), size + nxt.size
        return group

    async def _drain(self) -> None:
        group: list[_Waiting] = []
        try:
            while self._waiting:
                group = self._take()
                await self._store(group)
                group = []
        except BaseException as exc:
            for item in group:
                item.resolve(
                    exc if isinstance(exc, Exception) else StoreInterrupted("commit cancelled")
                )
            raise

    async def _store(self, group: list[_Waiting]) -> None:
        """Store ``group`` in one transaction; resolve each waiter. Never raises an
        Exception: each waiter gets its result or the error."""
        try:
            results = await self._one_transaction([p for item in group for p in item.batch])
        except Exception as exc:  # noqa: BLE001 - handed to the waiters
            if len(group) == 1 or not isinstance(exc, asyncpg.PostgresError) or is_transient(exc):
                for item in group:
                    item.resolve(exc)
                return
            log.warning("ingest: shared commit failed (%s); storing each batch alone", exc)
            for item in group:
                try:
                    item.resolve(await self._one_transaction(item.batch))
                except Exception as alone:  # noqa: BLE001 - handed to its waiter
                    item.resolve(alone)
            return
        start = 0
        for item in group:
            item.resolve(results[start : start + len(item.batch)])
            start += len(item.batch)

    async def _one_transaction(self, batch: list[Pending]) -> list[Outcome]:
        async with self.db.acquire() as conn:
            return await store_batch(conn, batch)
