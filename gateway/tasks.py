"""Stopping background tasks for sure.

``task.cancel(); await task`` can wait forever: on Python 3.11, ``asyncio.wait_for`` loses a
cancellation that arrives as the awaited operation completes (CPython gh-86296, fixed in
3.12), and redis-py wraps every socket write in ``wait_for`` when a socket timeout is set.
A loop whose cancel was lost simply goes round again, and its stopper waits on it forever:
a worker's heartbeat loop did exactly that under load, and the daemon ignored SIGTERM
(caught with the SIGUSR1 task dump). :func:`cancel_and_wait` cancels again until the tasks
are done, and gives up (logging the stragglers) after ``within`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_S = 0.2


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], within: float = 10.0, every: float = RECANCEL_S
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` (None entries skipped) and wait until they are done, cancelling
    again every ``every`` seconds (a lost cancellation costs one round; give tasks whose
    cancellation cleans up, a job returning itself to its queue, time to do so before a
    second cancel interrupts it). Returns the tasks still running after ``within`` seconds
    (logged); their exceptions are not raised."""
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.warning(
                "tasks did not stop when cancelled",
                extra={"tasks": sorted(t.get_name() for t in pending)},
            )
            break
        _, pending = await asyncio.wait(pending, timeout=min(every, left))
    for task in given:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: never "exception was never retrieved"
    return pending
