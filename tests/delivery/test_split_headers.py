"""Pure parts added for throughput: the header splitter DKIM signs from (the same headers
and body as dkimpy's own parser, for any header block)."""

from __future__ import annotations

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
