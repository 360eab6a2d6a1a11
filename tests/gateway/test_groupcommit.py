"""The group-commit primitive: what waits shares one call, caps by count and by bytes,
a bad item isolated and failing alone, outages not multiplied, a submitter that stops
waiting cancels nothing, bounded concurrency, a clean close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.groupcommit import GroupCommit


class Recorder:
    """``many``/``one`` that record their calls; negative items are bad data."""

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[list[int]] = []
        self.ones: list[int] = []
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0

    async def many(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if any(i < 0 for i in items):
            raise ValueError("negative in batch")
        return [i * 10 for i in items]

    async def one(self, item: int) -> int:
        self.ones.append(item)
        if item < 0:
            raise ValueError(f"negative {item}")
        return item * 10


async def test_concurrent_submits_share_one_call() -> None:
    """Items submitted in one loop iteration are one batch, answered in order."""
    r = Recorder()
    g: GroupCommit[int, int] = GroupCommit("t", r.many, one=r.one)
    assert await asyncio.gather(*(g.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert r.calls == [[0, 1, 2, 3, 4]] and g.batches == 1 and g.items == 5


async def test_bad_item_fails_alone_and_the_path_is_counted() -> None:
    """A batch that fails is run item by item: only the bad item fails (its own error),
    the others get results, and the isolation is counted."""
    r = Recorder()
    g: GroupCommit[int, int] = GroupCommit("t", r.many, one=r.one)
    results = await asyncio.gather(*(g.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "negative -2"
    assert r.ones == [1, -2, 3] and g.isolated == 1


async def test_outage_fails_everyone_without_isolation() -> None:
    """When ``isolate`` says the error is not an item's fault, nothing is retried one by
    one: every submitter gets the same error at once."""
    r = Recorder()
    g: GroupCommit[int, int] = GroupCommit(
        "t", r.many, one=r.one, isolate=lambda exc: not isinstance(exc, ValueError)
    )
    results = await asyncio.gather(*(g.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert all(isinstance(x, ValueError) and str(x) == "negative in batch" for x in results)
    assert r.ones == [] and g.isolated == 0


async def test_caps_by_count_weight_and_bytes() -> None:
    """A batch stops before passing max_items (by weight) or max_bytes; an item larger
    than the byte cap still commits, alone."""
    r = Recorder(delay_s=0.01)
    g: GroupCommit[int, int] = GroupCommit(
        "t", r.many, one=r.one, max_items=4, max_bytes=100, weight=lambda i: 2 if i == 7 else 1,
        size=lambda i: 500 if i == 9 else 10,
    )  # fmt: skip
    await asyncio.gather(*(g.submit(i) for i in (1, 2, 7, 3, 9, 4, 5)))
    # [1, 2, 7] weighs 4; 3 then 9 would pass 100 bytes; 9 alone is over the cap anyway.
    assert r.calls == [[1, 2, 7], [3], [9], [4, 5]]


async def test_concurrency_is_bounded() -> None:
    """At most ``concurrency`` calls run at once, however many items arrive."""
    r = Recorder(delay_s=0.02)
    g: GroupCommit[int, int] = GroupCommit("t", r.many, one=r.one, concurrency=2, max_items=3)
    await asyncio.gather(*(g.submit(i) for i in range(20)))
    assert r.most_in_flight == 2 and sum(len(c) for c in r.calls) == 20


async def test_a_submitter_that_stops_waiting_cancels_nothing() -> None:
    """A cancelled submitter's item still commits with the others."""
    r = Recorder(delay_s=0.05)
    g: GroupCommit[int, int] = GroupCommit("t", r.many, one=r.one)
    gone = asyncio.create_task(g.submit(1))
    kept = asyncio.create_task(g.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await kept == 20 and r.calls == [[1, 2]]
    await g.join()
    assert not g.busy


async def test_close_interrupts_the_commit_and_the_waiting() -> None:
    """close() cancels the commit in flight; its submitters and those still waiting get
    ``interrupted()``."""
    r = Recorder(delay_s=10)
    g: GroupCommit[int, int] = GroupCommit(
        "t", r.many, max_items=1, interrupted=lambda: RuntimeError("stopping")
    )
    tasks = [asyncio.create_task(g.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    await g.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(x, RuntimeError) and str(x) == "stopping" for x in results)
    assert not g.busy


async def test_push_logs_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """push(): nobody waits, and a failure is logged rather than lost."""
    r = Recorder()
    g: GroupCommit[int, int] = GroupCommit("t", r.many)
    g.push(-1)
    await g.join()
    await asyncio.sleep(0)
    assert any("group commit item failed" in rec.message for rec in caplog.records)


def test_bad_limits_are_refused() -> None:
    """A zero concurrency or batch size is a programming error, said at construction."""
    r = Recorder()
    with pytest.raises(ValueError, match="must be >= 1"):
        GroupCommit("t", r.many, concurrency=0)
