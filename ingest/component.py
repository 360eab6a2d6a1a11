"""IMAP ingest as a daemon component (entry point ``ingest``).

Every ``ingest_account_poll_s`` it reads ``email_accounts``: a new mailbox whose lease it can
take gets one :class:`~ingest.watcher.Watcher` per folder; a removed, disabled or changed one
has its watchers stopped (and restarted with the new settings). Leases are renewed every third
of their TTL; a lease lost (this instance was paused too long and another took over) stops
those watchers at once. A sweep routes again any message whose routing after commit was cut
short. ``stop`` ends IDLE at once, lets a message being stored finish until the deadline,
then cancels (a cancelled store rolls back: the message is fetched again later) and
releases the leases, so another instance takes over without waiting for the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.app import App
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.tasks import cancel_and_wait
from gateway.warmupmark import WarmupMarker
from ingest.accounts import Account, list_accounts
from ingest.committer import Committer
from ingest.coordination import Leases, LoginLimiter, instance_id
from ingest.machine import State
from ingest.metrics import IngestMetrics
from ingest.parse import warm_up
from ingest.routing import sweep
from ingest.watcher import IngestContext, Watcher

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 30.0


@dataclass
class _Mailbox:
    account: Account
    watchers: list[Watcher] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class IngestComponent:
    """All mailbox watchers of this instance."""

    name = "ingest"
    needs = ()

    def __init__(self, app: App, *, holder: str | None = None):
        self.app = app
        s = app.settings
        self.holder = holder or instance_id()
        self.metrics = IngestMetrics.of(app.metrics.registry)
        self.ctx = IngestContext(
            settings=s,
            db=app.db,
            redis=app.redis,
            box=CredentialBox(app.secret_key),
            marker=WarmupMarker(app.secret_key),
            limiter=LoginLimiter(app.redis, s.ingest_logins_per_min, s.ingest_login_burst),
            metrics=self.metrics,
            committer=Committer(
                app.db,
                committers=s.ingest_committers,
                max_messages=s.ingest_fetch_batch_messages,
                max_bytes=s.ingest_fetch_batch_bytes,
            ),
        )
        self.leases = Leases(app.redis, self.holder, s.ingest_lease_ttl_s)
        self.mailboxes: dict[str, _Mailbox] = {}
        self.rng = random.Random()
        self._loops: list[asyncio.Task[None]] = []
        self._warm_up: asyncio.Task[None] | None = None
        self._started = False
        self._first = True

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # flanker's first parse costs ~100 ms (imports, regex compiles): paid here, in a
        # thread, while the watchers log in, not by the event loop on the first message.
        self._warm_up = asyncio.create_task(asyncio.to_thread(warm_up), name="ingest-warm-up")
        self.app.metrics.add_refresher(self._refresh_metrics)
        await self.reconcile()
        self._loops = [
            asyncio.create_task(
                self._every(self.app.settings.ingest_account_poll_s, self.reconcile),
                name="ingest-poll",
            ),
            asyncio.create_task(
                self._every(self.app.settings.ingest_lease_ttl_s / 3, self._renew),
                name="ingest-leases",
            ),
            asyncio.create_task(self._every(SWEEP_INTERVAL_S, self._sweep), name="ingest-sweep"),
        ]
        self._started = True

    async def stop(self, deadline: float) -> None:
        self.app.metrics.remove_refresher(self._refresh_metrics)
        await cancel_and_wait(self._loops)
        self._loops = []
        ids = list(self.mailboxes)
        try:
            await self._stop_mailboxes(ids, deadline)
        finally:
            self._started = False
            await self.ctx.committer.close()
            if self._warm_up is not None:
                with contextlib.suppress(Exception):
                    await self._warm_up  # a thread cannot be cancelled: ~0.1 s at most

    def ready(self) -> bool:
        return self._started

    # -- periodic work -----------------------------------------------------------------------

    async def _every(self, interval_s: float, work: object) -> None:
        assert callable(work)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis/PostgreSQL hiccup: next round
                log.warning("ingest %s failed: %s", getattr(work, "__name__", "task"), exc)

    async def reconcile(self) -> None:
        """Bring the running watchers in line with ``email_accounts`` and the leases."""
        accounts = {a.id: a for a in await list_accounts(self.app.db)}
        stale = [
            i
            for i, box in self.mailboxes.items()
            if i not in accounts or accounts[i].version != box.account.version
        ]
        if stale:
            loop = asyncio.get_running_loop()
            await self._stop_mailboxes(stale, loop.time() + 5.0)
        stagger = self.app.settings.ingest_start_stagger_s if self._first else 0.0
        self._first = False
        for account_id, account in accounts.items():
            if account_id in self.mailboxes:
                continue
            if not await self.leases.acquire(account_id):
                continue
            self._start_mailbox(account, stagger)

    def _start_mailbox(self, account: Account, stagger_s: float) -> None:
        box = _Mailbox(account)
        for folder in account.folders:
            watcher = Watcher(self.ctx, account, folder, random.Random(self.rng.random()))
            box.watchers.append(watcher)
            delay = self.rng.uniform(0, stagger_s) if stagger_s > 0 else 0.0
            box.tasks.append(
                asyncio.create_task(watcher.run(delay), name=f"watch-{account.id}-{folder}")
            )
        self.mailboxes[account.id] = box
        log.info(
            "watching mailbox", extra={"account": account.id, "folders": list(account.folders)}
        )

    async def _stop_mailboxes(self, ids: list[str], deadline: float) -> None:
        boxes = [self.mailboxes.pop(i) for i in ids if i in self.mailboxes]
        tasks: list[asyncio.Task[None]] = []
        for box in boxes:
            for watcher, task in zip(box.watchers, box.tasks, strict=True):
                watcher.request_stop()
                if not watcher.busy:
                    task.cancel()  # idling or connecting: nothing in flight
                tasks.append(task)
        if tasks:
            loop = asyncio.get_running_loop()
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            for task in pending:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.warning("watcher ended with %r", result)
        for box in boxes:
            with contextlib.suppress(Exception):
                await self.leases.release(box.account.id)

    async def _renew(self) -> None:
        lost = await self.leases.renew(list(self.mailboxes))
        if lost:
            log.warning(
                "mailbox leases lost; stopping their watchers", extra={"accounts": sorted(lost)}
            )
            loop = asyncio.get_running_loop()
            await self._stop_mailboxes(sorted(lost), loop.time())

    async def _sweep(self) -> None:
        await sweep(self.app.db, self.app.redis, older_than_s=SWEEP_INTERVAL_S)

    async def _refresh_metrics(self) -> None:
        self.metrics.set_states(self.states())

    def states(self) -> dict[State, int]:
        """Watchers per state (for the imap_connections gauge and tests)."""
        return dict(Counter(w.state for box in self.mailboxes.values() for w in box.watchers))

    def status(self) -> dict[str, Any]:
        """For `mailgate status` and the dashboard (gateway.status reads it): watchers per
        state, and each watcher in backoff with its last error (at most 100)."""
        backoff = [
            {
                "account": box.account.id,
                "address": box.account.address,
                "folder": w.folder,
                "failures": w.machine.failures,
                "last_error": w.machine.last_error,
            }
            for box in self.mailboxes.values()
            for w in box.watchers
            if w.state is State.BACKOFF
        ]
        return {
            "watchers": {state.value: n for state, n in self.states().items()},
            "backoff": backoff[:100],
        }


def create(app: App, services: Services) -> IngestComponent:
    return IngestComponent(app)
