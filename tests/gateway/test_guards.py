"""The deliverability guards' decision (pure): each guard's threshold, a young account's
window counted as full, policy blocks for accounts only."""

from __future__ import annotations

from typing import Any

from gateway import guards
from gateway.app import App
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


async def test_policy_block_run_from_one_domain_pauses_the_account(app: App) -> None:
    """Against PostgreSQL: the account's last N sends to gmail.com all refused for policy
    pause it (policy_blocks) with an account.paused event; a success in the run, or the
    same refusals spread over other domains, do not."""
    settings = app.settings.model_copy(update={"guard_policy_blocks": 3})
    rows = [(f"d{n}", f"u{n}@gmail.com", "failed", "blocked") for n in range(2)]
    rows += [("d2", "u2@gmail.com", "sent", None), ("d3", "u3@yahoo.com", "failed", "blocked")]
    rows += [("d4", "u4@gmail.com", "failed", "blocked")]
    for n, (delivery_id, email, status, reason) in enumerate(rows):
        await app.db.execute(
            "INSERT INTO email_deliveries (id, tenant_id, recipient_email, email_account_id,"
            " idempotency_key, status, bounce_reason, smtp_code, created_at)"
            " VALUES ($1, 't1', $2, 'acct', $1, $3, $4, 550,"
            " now() - make_interval(secs => $5))",
            delivery_id, email, status, reason, 100 - n,
        )  # fmt: skip

    async def check() -> list[tuple[str, str, Any]]:
        async with app.db.acquire() as conn:
            return await guards.check(
                conn, settings, "t1", account_id="acct", campaign_id=None, domain="gmail.com"
            )

    assert await check() == []  # d4, then d2 (a success) ends the run at 1
    await app.db.execute(
        "INSERT INTO email_deliveries (id, tenant_id, recipient_email, email_account_id,"
        " idempotency_key, status, bounce_reason, smtp_code)"
        " VALUES ('d5', 't1', 'u5@gmail.com', 'acct', 'd5', 'failed', 'blocked', 550),"
        " ('d6', 't1', 'u6@gmail.com', 'acct', 'd6', 'failed', 'policyviolation', 554)"
    )
    [(scope, subject, trip)] = await check()
    assert (scope, subject, trip.guard) == ("account", "acct", "policy_blocks")
    assert "gmail.com" in trip.reason
    assert await app.db.fetchval("SELECT count(*) FROM events WHERE type = 'account.paused'") == 1
    assert await check() == []  # already paused: no second event
