"""The warmup plan, the marker and the IMAP wire parsing: pure, property-tested."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.messagekind import Kind, classify_kind, lookup
from gateway.warmupmark import WarmupMarker
from warmup import content, plan
from warmup.imapwire import Folder, junk_folder, parse_list, parse_search, quote

DAY0 = dt.date(2026, 12, 7)  # a Monday
ramps = st.builds(
    plan.Ramp,
    daily_start=st.integers(0, 100),
    daily_increment=st.integers(0, 20),
    daily_max=st.integers(0, 200),
    started_on=st.just(DAY0),
    weekdays_only=st.booleans(),
)


@settings(deadline=None)
@given(ramps, st.integers(-5, 400), st.one_of(st.none(), st.integers(0, 300)))
def test_quota_is_the_ramp_capped(ramp: plan.Ramp, n: int, limit: int | None) -> None:
    """Day n's quota is min(start + n*inc, max), never above the account limit, 0 before
    the start and (weekdays_only) at weekends."""
    day = DAY0 + dt.timedelta(days=n)
    q = plan.quota(ramp, day, limit)
    assert plan.day_index(ramp, day) == n
    if n < 0 or (ramp.weekdays_only and day.weekday() >= 5):
        assert q == 0
        return
    expected = min(ramp.daily_start + n * ramp.daily_increment, ramp.daily_max)
    if limit:
        expected = min(expected, limit)
    assert q == expected
    if n > 0 and not ramp.weekdays_only:
        assert q >= plan.quota(ramp, day - dt.timedelta(days=1), limit)


zones = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])


@settings(deadline=None)
@given(st.integers(0, 60), st.integers(0, 22), st.integers(1, 24), zones, st.integers(0, 400))
def test_schedule_spreads_the_quota_over_the_window(
    count: int, start: int, length: int, zone: str, offset: int
) -> None:
    """count times, sorted, inside the window, the same for the same seed; a slot each."""
    end = min(24, start + length)
    window = plan.Window(start, end, zone)
    day = DAY0 + dt.timedelta(days=offset)
    times = plan.schedule(count, day, window, "t:acct")
    assert len(times) == count
    assert times == sorted(times)
    lo, hi = window.bounds(day)
    assert all(lo < t < hi for t in times)
    assert times == plan.schedule(count, day, window, "t:acct")
    if count:
        assert plan.to_plan(times, 0, lo, all_now=False) == 0
        assert plan.to_plan(times, 0, hi, all_now=False) == count
        assert plan.to_plan(times, count, hi, all_now=True) == 0
        assert plan.to_plan(times, 0, lo, all_now=True) == count


members = st.lists(
    st.builds(
        plan.Member,
        account_id=st.sampled_from([f"a{i}" for i in range(6)]),
        tenant_id=st.just("t"),
        host=st.sampled_from(["h1", "h2", "h3"]),
    ),
    max_size=8,
    unique_by=lambda m: m.account_id,
)


@settings(deadline=None)
@given(members, st.integers(0, 7), st.one_of(st.none(), st.sampled_from(["a0", "a1", "a2"])))
def test_pairing_rules(pool: list[plan.Member], pick: int, last: str | None) -> None:
    """Never itself; not the last receiver when avoidable; then another host if any."""
    if not pool:
        return
    sender = pool[pick % len(pool)]
    to = plan.pick_receiver(sender, pool, last, random.Random(pick))
    others = [m for m in pool if m.account_id != sender.account_id]
    if not others:
        assert to is None
        return
    assert to is not None and to.account_id != sender.account_id
    if any(m.account_id != last for m in others):
        assert to.account_id != last
        others = [m for m in others if m.account_id != last]
    if any(m.host != sender.host for m in others):
        assert to.host != sender.host


@settings(deadline=None)
@given(st.floats(0, 1), st.integers(1, 300))
def test_replies_follow_the_rate_within_one(rate: float, n: int) -> None:
    """Over n messages the planned replies are within one of rate x n."""
    replies = sum(plan.reply_planned(k, rate) for k in range(n))
    assert abs(replies - rate * n) <= 1


@settings(deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=40))
def test_marker_verifies_its_own_and_nothing_else(domain: str) -> None:
    """A minted Message-ID verifies (also lower-cased); another secret's, a tampered one
    and a different domain do not."""
    marker = WarmupMarker(b"k" * 40)
    mid = marker.mint(domain)
    assert marker.verify(mid) and marker.verify(mid.upper().lower())
    assert not WarmupMarker(b"x" * 40).verify(mid)
    nonce, rest = mid[1:].split(".", 1)
    tampered = "<" + ("a" if nonce[0] != "a" else "b") + nonce[1:] + "." + rest
    assert not marker.verify(tampered)
    assert not marker.verify(mid.replace("@", "@x"))
    assert not marker.verify(None) and not marker.verify("<plain@example.com>")


def test_classifier_marks_only_verified_warmup() -> None:
    """kind warmup needs the caller's verdict; a bounce stays a bounce."""
    headers = lookup({"Subject": "Notes from our call", "From": "a@x.test"})
    assert classify_kind(headers, warmup=True) is Kind.WARMUP
    assert classify_kind(headers, warmup=False) is Kind.EMAIL
    dsn = lookup({"Content-Type": "multipart/report; report-type=delivery-status"})
    assert classify_kind(dsn, warmup=True) is Kind.BOUNCE


@settings(deadline=None)
@given(st.text(min_size=1, max_size=60), st.text(max_size=60))
def test_content_is_plain_and_threaded(seed: str, subject: str) -> None:
    """No links or pixels; a reply says Re:, and In-Reply-To/References name the parent."""
    draft = content.new_message(seed, "ann.lee@a.test", "bob@b.test", "<m1@a.test>")
    raw = content.render(draft, date=0).decode()
    assert "http" not in raw and "<img" not in raw and "lorem" not in raw.lower()
    assert draft.subject in content.SUBJECTS
    reply = content.reply_to(seed, "bob@b.test", "ann.lee@a.test", "<r1@b.test>",
                             draft.subject, "<m1@a.test>", "<m0@a.test>")  # fmt: skip
    raw_reply = content.render(reply, date=0).decode()
    assert "Subject: Re: " + draft.subject in raw_reply
    assert "In-Reply-To: <m1@a.test>\r\n" in raw_reply
    assert "References: <m0@a.test> <m1@a.test>\r\n" in raw_reply


def test_imap_wire() -> None:
    """LIST with SPECIAL-USE flags, the Junk folder by flag then by name, SEARCH, quoting."""
    lines = [
        b'* LIST (\\HasNoChildren) "/" INBOX',
        b'* LIST (\\HasNoChildren \\Junk) "/" "Courrier ind\\"esirable"',
        b'* LIST (\\HasNoChildren) "/" Spam',
    ]
    folders = parse_list(lines)
    assert junk_folder(folders) == 'Courrier ind"esirable'
    assert junk_folder(parse_list([lines[0], lines[2]])) == "Spam"
    assert junk_folder([Folder("[Gmail]/Spam", frozenset())]) == "[Gmail]/Spam"
    assert junk_folder([Folder("INBOX", frozenset())]) is None
    assert parse_search([b"* SEARCH 3 7", b"* SEARCH"]) == [3, 7]
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
