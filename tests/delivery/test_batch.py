"""Pure parts added for throughput: the header splitter DKIM signs from (the same headers
and body as dkimpy's own parser, for any header block) and the statement coalescer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.batch import Coalescer
from delivery.dkimsign import DkimKeyError, split_headers

_NAME = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1
)
_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    lambda v: v.encode()
)
_HEADER = st.tuples(_NAME.map(lambda n: n.encode()), st.lists(_VALUE, min_size=1, max_size=3))


@given(st.lists(_HEADER, min_size=1, max_size=12), st.binary(max_size=400))
def test_split_headers_matches_dkimpy(
    headers: list[tuple[bytes, list[bytes]]], body: bytes
) -> None:
    """Any header block (folded lines too) splits into exactly what dkim.rfc822_parse gives."""
    lines = []
    for name, (first, *more) in headers:
        lines.append(name + b":" + first)
        lines.extend(b" " + m for m in more)
    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    message = b"\r\n".join(lines) + b"\r\n\r\n" + body
    ours = split_headers(message)
    theirs = dkim.rfc822_parse(message)
    assert [list(h) for h in ours[0]] == theirs[0]
    assert ours[1] == theirs[1]


def test_split_headers_refuses_a_malformed_line() -> None:
    """A header line without a colon is an error naming the line, not a bad signature."""
    with pytest.raises(DkimKeyError, match="malformed header line"):
        split_headers(b"From: a@b.test\r\nno colon here\r\n\r\nbody")


async def test_coalescer_batches_and_falls_back_one_by_one() -> None:
    """Concurrent submits share one call; a failing batch is retried item by item so only
    the bad item fails, and every submitter gets its own answer."""
    calls: list[list[int]] = []

    async def many(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative in batch")
        return [i * 10 for i in items]

    async def one(item: int) -> int:
        if item < 0:
            raise ValueError(f"negative {item}")
        return item * 10

    c: Coalescer[int, int] = Coalescer("t", many, one)
    assert await asyncio.gather(*(c.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert calls == [[0, 1, 2, 3, 4]]
    results = await asyncio.gather(*(c.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and "negative -2" in str(results[1])
    assert c.batches == 2 and c.items == 8
