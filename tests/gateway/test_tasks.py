"""cancel_and_wait: a cancellation that is lost (CPython 3.11's wait_for race, inside
redis-py) must not leave a stopper waiting forever."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.tasks import cancel_and_wait


async def test_a_loop_that_lost_its_cancel_is_cancelled_again() -> None:
    """The loop swallows the first cancel (as a lost one looks from outside) and goes round
    again; the second cancel ends it."""
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            if rounds == 1:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                continue
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    left = await asyncio.wait_for(cancel_and_wait([task, None], within=5.0, every=0.05), 10)
    assert left == set() and task.cancelled() and rounds == 2


async def test_a_task_that_never_stops_is_returned_after_within() -> None:
    """One that swallows every cancel is given up on after ``within`` (and logged)."""
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    left = await cancel_and_wait([task], within=0.3, every=0.05)
    assert left == {task} and 0.25 <= loop.time() - t0 < 2
    released.set()  # the test leaves nothing running
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()


async def test_a_failed_task_is_retrieved_not_raised() -> None:
    async def boom() -> None:
        raise RuntimeError("x")

    task = asyncio.create_task(boom())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task]) == set()
