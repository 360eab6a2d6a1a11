"""How the IMAP session hands received bytes to aioimaplib's protocol (no socket: the bytes
a server would send, fed to the protocol as reads of any size)."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import aioimaplib
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.imap import ImapSession
from ingest.imapwire import parse_fetch


def _session() -> tuple[ImapSession, aioimaplib.IMAP4ClientProtocol]:
    proto = aioimaplib.IMAP4ClientProtocol(asyncio.get_running_loop())
    session = ImapSession(SimpleNamespace(protocol=proto), asyncio.Event(), 5.0)  # type: ignore[arg-type]
    return session, proto


def _fetch_answer(count: int) -> tuple[bytes, dict[int, bytes]]:
    bodies = {n: b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(1, count + 1)}
    answer = b"".join(
        b"* %d FETCH (UID %d RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n"
        % (n, n, len(body), len(body), body)
        for n, body in bodies.items()
    )
    return answer + b"A1 OK Fetch completed.\r\n", bodies


async def test_thousands_of_lines_in_one_read_do_not_overflow_the_stack() -> None:
    """3,000 untagged lines in one read (aioimaplib alone recurses once per line) are all seen."""
    session, proto = _session()
    proto.data_received(b"".join(b"* %d EXISTS\r\n" % n for n in range(1, 3001)))
    assert session.exists_seen == 3000


async def _fetch_fed_in(reads: list[int], count: int) -> tuple[list[object], dict[int, bytes]]:
    _, proto = _session()
    command = aioimaplib.FetchCommand("A1", loop=asyncio.get_running_loop())
    proto.pending_async_commands["FETCH"] = command
    answer, bodies = _fetch_answer(count)
    start = 0
    for size in [*reads, len(answer)]:
        if start < len(answer):
            proto.data_received(answer[start : start + size])
            start += size
    await asyncio.wait_for(command.wait(), 5)
    assert command.response is not None and command.response.result == "OK"
    return parse_fetch(command.response.lines), bodies  # type: ignore[arg-type]


async def test_a_fetch_answer_in_one_read_yields_every_message() -> None:
    """1,500 small messages answered in a single read are parsed whole, bodies intact."""
    items, bodies = await _fetch_fed_in([], 1500)
    assert {i.uid: i.body for i in items} == bodies  # type: ignore[attr-defined]


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_split_of_a_fetch_answer_gives_the_same_messages(seed: int) -> None:
    """However the reads split the answer (inside lines, literals, CRLF), the result is the same."""
    rng = random.Random(seed)
    reads = [rng.choice([1, 2, 7, 60, 500, 4096, 5000, 70000]) for _ in range(400)]

    async def run() -> None:
        items, bodies = await _fetch_fed_in(reads, 60)
        assert {i.uid: i.body for i in items} == bodies  # type: ignore[attr-defined]

    asyncio.run(run())
