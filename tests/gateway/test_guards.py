"""The deliverability guards' decision (pure): each guard's threshold, a young account's
window counted as full, policy blocks for accounts only."""

from __future__ import annotations

from gateway.guards import Thresholds, Window, decide

T = Thresholds(bounce_window=200, bounce_rate=0.05, complaint_window=1000,
               complaint_rate=0.003, policy_blocks=10)  # fmt: skip


def test_hard_bounce_rate_over_a_full_window() -> None:
    """10 hard bounces in 200 sends (5 %) trip; 9 do not."""
    assert decide(Window(200, 9, 200, 0), T) is None
    trip = decide(Window(200, 10, 200, 0), T)
    assert trip is not None and trip.guard == "hard_bounce_rate" and "5.0%" in trip.reason


def test_a_young_account_counts_its_window_as_full() -> None:
    """2 hard bounces of 3 sends are 2/200, not 67 %: no pause on the first bounces."""
    assert decide(Window(3, 2, 3, 0), T) is None


def test_complaint_rate_is_gmails_threshold() -> None:
    """3 complaints in 1,000 sends (0.3 %) trip; 2 do not."""
    assert decide(Window(200, 0, 1000, 2), T) is None
    trip = decide(Window(200, 0, 1000, 3), T)
    assert trip is not None and trip.guard == "complaint_rate"


def test_consecutive_policy_blocks_pause_accounts_only() -> None:
    """Ten policy refusals in a row from one domain trip an account's guard."""
    window = Window(50, 0, 50, 0, policy_run=10, policy_domain="gmail.com")
    trip = decide(window, T)
    assert trip is not None and trip.guard == "policy_blocks" and "gmail.com" in trip.reason
    assert decide(window, T, policy=False) is None
    assert decide(Window(50, 0, 50, 0, policy_run=9, policy_domain="gmail.com"), T) is None
