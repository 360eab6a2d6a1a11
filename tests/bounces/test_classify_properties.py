"""Property tests: classification is total (never raises) on arbitrary and mutated input."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounces.classify import classify
from bounces.model import REASONS

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.eml"))
SEEDS = [p.read_bytes() for p in FIXTURES]
KINDS = {"dsn", "complaint", "auto_reply", "not_bounce"}


def _valid(results: list[object]) -> None:
    assert results
    for res in results:
        assert getattr(res, "kind") in KINDS  # noqa: B009 - typed loosely on purpose
        reason = getattr(res, "reason")  # noqa: B009
        assert reason == "" or reason in REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    """Any byte string classifies to well-formed results without raising."""
    _valid(list(classify(raw)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.integers(min_value=0),
    st.integers(min_value=0),
    st.binary(max_size=64),
)
def test_never_raises_on_mutated_fixtures(
    seed: bytes, start: int, length: int, junk: bytes
) -> None:
    """Realistic reports with a slice replaced by junk still classify without raising."""
    i = start % (len(seed) + 1)
    j = min(len(seed), i + length % 200)
    _valid(list(classify(seed[:i] + junk + seed[j:])))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(min_value=1, max_value=5000))
def test_never_raises_on_truncated_fixtures(seed: bytes, cut: int) -> None:
    """A report cut off at any point (lost connection) still classifies."""
    _valid(list(classify(seed[: cut % (len(seed) + 1)])))
