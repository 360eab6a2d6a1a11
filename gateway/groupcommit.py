"""Group commit: what is submitted while a commit runs shares the next one.

The one batching primitive of mailgate (ingest's message store, the bounce listener's
intake, delivery's statements, the job runtime's tracking writes all stand on it)::

    commits = GroupCommit("ingest", store_many, one=store_one, concurrency=2,
                          max_items=100, max_bytes=8 << 20, size=len_of_raw)
    result = await commits.submit(item)

* **Batching without a timer.** An idle primitive runs the next loop iteration (or after
  ``linger_s``), so a lone item waits for nothing; under load a batch is whatever arrived
  during the previous commit.
* **Bounded.** At most ``concurrency`` commits run at once. A batch takes items in order
  while it stays within ``max_items`` (each item weighs ``weight(item)``, 1 by default) and
  ``max_bytes`` (each item's ``size(item)``); the first item always goes, so an item larger
  than the cap commits alone.
* **A bad item fails alone.** When ``many`` raises and ``isolate(exc)`` says the error may
  be one item's fault (a constraint, bad data, one slow member), the batch is run again
  item by item through ``one``; an outage (``isolate`` false) fails every item at once
  rather than being multiplied.
* **Each submitter gets its own answer**, result or exception. A submitter that stops
  waiting (cancelled, timed out) cancels only its own future: the batch runs on for the
  others, and what it did for that item stays done, as a single statement would have.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")


def _always(exc: BaseException) -> bool:
    return True


class GroupCommit(Generic[I, R]):
    """Runs ``many`` over the items submitted meanwhile; ``one`` to isolate a failure."""

    def __init__(
        self,
        name: str,
        many: Callable[[list[I]], Awaitable[Sequence[R]]],
        *,
        one: Callable[[I], Awaitable[R]] | None = None,
        concurrency: int = 1,
        max_items: int = 100,
        max_bytes: int = 0,
        weight: Callable[[I], int] | None = None,
        size: Callable[[I], int] | None = None,
        isolate: Callable[[BaseException], bool] = _always,
        linger_s: float = 0.0,
        interrupted: Callable[[], BaseException] | None = None,
    ):
        if concurrency < 1 or max_items < 1:
            raise ValueError("concurrency and max_items must be >= 1")
        self.name = name
        self._many = many
        self._one = one
        self.concurrency = concurrency
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._weight = weight
        self._size = size
        self._isolate = isolate
        self._linger_s = linger_s
        self._interrupted = interrupted
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self.batches = 0
        self.items = 0
        self.isolated = 0  # batches run again item by item

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, item: I) -> R:
        """The item's result (or its exception), once the batch holding it has run."""
        return await self._enqueue(item)

    def push(self, item: I) -> None:
        """Submit without waiting (a failure is logged, never lost silently)."""
        self._enqueue(item).add_done_callback(self._log_unawaited)

    def _log_unawaited(self, future: asyncio.Future[R]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning(
                "group commit item failed",
                extra={"batch": self.name, "error": repr(future.exception())[:300]},
            )

    def _enqueue(self, item: I) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self.concurrency:
            self._tasks.add(asyncio.create_task(self._drain(), name=f"group-commit-{self.name}"))
        return future

    @property
    def busy(self) -> bool:
        """True while items wait for, or are in, a commit."""
        return bool(self._pending or self._tasks)

    # -- running ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        task = asyncio.current_task()
        try:
            await asyncio.sleep(self._linger_s)  # 0: let this loop iteration's submitters join
            while self._pending:
                await self._run(self._take())
        finally:
            # Synchronously after the last look at _pending: an item submitted from now on
            # starts a task of its own (none can be left waiting without one).
            self._tasks.discard(task)
            if not self._tasks and not self._pending and self._idle is not None:
                self._idle.set()

    def _take(self) -> list[tuple[I, asyncio.Future[R]]]:
        """The next batch: the first waiting item, then more while within the caps."""
        weight, size = self._weight, self._size
        first = self._pending[0]
        count = weight(first[0]) if weight else 1
        total = size(first[0]) if size else 0
        end = 1
        while end < len(self._pending):
            item = self._pending[end][0]
            count += weight(item) if weight else 1
            total += size(item) if size else 0
            if count > self.max_items or (self.max_bytes and total > self.max_bytes):
                break
            end += 1
        batch, self._pending = self._pending[:end], self._pending[end:]
        return batch

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._many([item for item, _ in batch])
        except asyncio.CancelledError:
            self._abandon(batch)
            raise
        except Exception as exc:  # noqa: BLE001 - isolated below or handed to the submitters
            if len(batch) == 1 or self._one is None or not self._isolate(exc):
                for _, future in batch:
                    _fail(future, exc)
                return
            self.isolated += 1
            log.warning(
                "batched commit failed; running its items one by one",
                extra={"batch": self.name, "items": len(batch), "error": repr(exc)[:300]},
            )
            await self._one_by_one(batch)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        assert self._one is not None
        for index, (item, future) in enumerate(batch):
            if future.done():  # its submitter stopped waiting: nothing to answer
                continue
            try:
                result = await self._one(item)
            except asyncio.CancelledError:
                self._abandon(batch[index:])
                raise
            except Exception as exc:  # noqa: BLE001 - handed to its submitter
                _fail(future, exc)
            else:
                future.set_result(result)

    def _abandon(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        """The commit was cancelled (stopping): its submitters learn it did not run."""
        for _, future in batch:
            if not future.done():
                if self._interrupted is not None:
                    _fail(future, self._interrupted())
                else:
                    future.cancel()

    # -- stopping --------------------------------------------------------------------------

    async def join(self) -> None:
        """Wait until everything submitted so far has been committed (or failed)."""
        while self.busy:
            self._idle = asyncio.Event()
            await self._idle.wait()

    async def close(self) -> None:
        """Cancel the commits in flight (rolled back) and fail what still waits with
        ``interrupted()`` (cancelled futures without one)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiting, self._pending = self._pending, []
        self._abandon(waiting)


def _fail(future: asyncio.Future[R], exc: BaseException) -> None:
    """Hand ``exc`` to the submitter unless it stopped waiting."""
    if not future.done():
        future.set_exception(exc)
