"""VERP tokens: mint/verify round trip, forgeries and garbage recognised, never raising."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.verp import Verp, VerpError

KEY = b"k" * 40


@given(st.text(min_size=1, max_size=12).filter(lambda s: 0 < len(s.encode()) <= 24))
def test_round_trip(delivery_id: str) -> None:
    """Every delivery id mints an address that verifies back to it, even lower-cased."""
    verp = Verp(KEY)
    address = verp.address(delivery_id, "Bounces.Test")
    assert len(address.split("@")[0]) < 64
    assert verp.verify(address).delivery_id == delivery_id
    assert verp.verify(address.upper()).delivery_id == delivery_id
    assert verp.verify(f"<{address}>").delivery_id == delivery_id


def test_uuid_delivery_ids_fit() -> None:
    """A uuid hex delivery id gives a local part well under 64 characters."""
    address = Verp(KEY).address(uuid.uuid4().hex[:24], "b.test")
    assert len(address.split("@")[0]) <= 64


def test_forged_and_other_keys_are_rejected() -> None:
    """A token from another key, or with a changed id, is 'forged'."""
    mine, theirs = Verp(KEY), Verp(b"x" * 40)
    address = theirs.address("d-1", "b.test")
    assert mine.verify(address).reason == "forged"
    token = mine.token("d-1")
    other = mine.token("d-2")
    spliced = f"b+{other.split('-')[0]}-{token.split('-')[1]}@b.test"
    assert mine.verify(spliced).reason == "forged"


@given(st.text(max_size=80))
def test_garbage_never_raises(address: str) -> None:
    """Arbitrary text is classified, never an exception, and never valid by accident."""
    result = Verp(KEY).verify(address)
    assert result.reason in {"ok", "not_verp", "malformed", "forged"}
    assert result.reason != "ok"


def test_too_long_ids_are_refused() -> None:
    """An id that would overflow the local part is refused when minting."""
    with pytest.raises(VerpError):
        Verp(KEY).token("x" * 25)
