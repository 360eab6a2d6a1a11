"""Property tests of the CSV reader (pure): chunking never changes the lines, the fast
address pattern never admits what flanker refuses, and rows keep their line numbers."""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.csvrows import _FAST, RowParser, lines_of, valid_address
from gateway import flankerlib


def reader(data: bytes, cuts: list[int]) -> Callable[[], bytes]:
    edges = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(edges) if b > a]
    chunks.append(b"")

    def read() -> bytes:
        return chunks.pop(0) if chunks else b""

    return read


TEXT = st.text(alphabet=st.sampled_from([*list('ab,"é\r\n x'), "☃"]), max_size=200)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_chunk_edges_never_change_the_lines(text: str, cuts: list[int]) -> None:
    """Lines read from any chunking of the UTF-8 bytes (cuts inside characters and inside
    CRLF included) are the lines of the whole text."""
    data = text.encode()
    got = "".join(lines_of(reader(data, cuts)))
    assert got == text


LOCAL = st.text(
    alphabet=string.ascii_lowercase + string.digits + "._%+-!#$&'*/=?^`{|}~",
    min_size=1,
    max_size=20,
)
DOMAIN = st.text(alphabet=string.ascii_lowercase + string.digits + ".-", min_size=1, max_size=30)


@settings(max_examples=400, deadline=None)
@given(LOCAL, DOMAIN)
def test_fast_pattern_admits_only_what_flanker_accepts(local: str, domain: str) -> None:
    """Whatever the fast pattern admits, flanker's parser accepts too (so the shortcut
    changes speed, never the verdict on an address it admits)."""
    address = f"{local}@{domain}"
    if _FAST.match(address) and len(address) <= 254 and len(local) <= 64:
        assert flankerlib.address().parse(address, addr_spec_only=True) is not None
        assert valid_address(address)


def test_rows_keep_physical_line_numbers_and_reasons() -> None:
    """A quoted field over two lines, a blank line, a short row and a bad address: line
    numbers are the file's, the reasons say what was wrong."""
    data = (
        b'email,name\r\n"A@Example.com","Ann\r\nSecond line"\r\n\r\n'
        b"<b@example.org>,Bob\r\nnot-an-address,X\r\n,Empty\r\n"
    )
    parser = RowParser(
        lines_of(reader(data, [7, 30])),
        {"email": "email", "name": "name"},
        has_header=True,
        delimiter=",",
    )
    batch = parser.next_batch()
    assert batch is not None and parser.next_batch() is None
    assert batch.rows == 4
    assert [(r.line, r.email, r.name) for r in batch.valid] == [
        (3, "a@example.com", "Ann\r\nSecond line"),
        (5, "b@example.org", "Bob"),
    ]
    assert [(i.line, i.reason) for i in batch.invalid] == [
        (6, "invalid address"),
        (7, "empty email"),
    ]
