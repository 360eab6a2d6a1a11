"""Group statements: many concurrent sends share one PostgreSQL round trip.

Each send used to make three round trips of its own (contact, claim, outcome); with 50
sends in flight the process spent more CPU on asyncpg and the event loop than on SMTP.
A :class:`Coalescer` collects the items submitted while its previous batch was in flight
and hands them to one ``flush(items) -> results`` call (one statement over ``unnest``
arrays). There is no linger timer: an idle coalescer flushes at the next loop iteration,
so a lone send waits for nothing, and under load the batch is whatever arrived during
the last round trip (group commit).

A failed batch is retried item by item (``one``), so one bad row fails only its own send
and a batch-level error (a deadlock, a lost connection) is not multiplied. Each submitter
gets its own result or exception; a submitter cancelled while waiting does not cancel the
batch (the others still need it), and what its item did stays done, as a single statement
would have.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")


class Coalescer(Generic[I, R]):
    """Runs ``many`` over the items submitted meanwhile; ``one`` when a batch fails."""

    def __init__(
        self,
        name: str,
        many: Callable[[Sequence[I]], Awaitable[Sequence[R]]],
        one: Callable[[I], Awaitable[R]],
        *,
        max_batch: int = 200,
    ):
        self.name = name
        self._many = many
        self._one = one
        self._max = max_batch
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: I) -> R:
        """The item's result, after the batch holding it ran."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"coalescer-{self.name}")
        # No shield needed: a cancelled submitter cancels only its own future, which the
        # batch then skips (results go only to futures not done); the batch task runs on.
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let this loop iteration's submitters join
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        items = [item for item, _ in batch]
        try:
            results = await self._many(items)
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - retried one by one below
            if len(batch) > 1:
                log.warning(
                    "batched statement failed; running its items one by one",
                    extra={"batch": self.name, "items": len(batch), "error": repr(exc)[:300]},
                )
            await self._one_by_one(batch, first_error=exc if len(batch) == 1 else None)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _one_by_one(
        self, batch: list[tuple[I, asyncio.Future[R]]], first_error: Exception | None
    ) -> None:
        for item, future in batch:
            if future.done():
                continue
            if first_error is not None:
                _fail(future, first_error)
                continue
            try:
                result = await self._one(item)
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the submitter
                _fail(future, exc)
            else:
                future.set_result(result)


def _fail(future: asyncio.Future[R], exc: Exception) -> None:
    """Hand ``exc`` to the submitter; marked retrieved in case it was cancelled."""
    future.set_exception(exc)
    if future.cancelled() is False and future.done():
        future.exception()
