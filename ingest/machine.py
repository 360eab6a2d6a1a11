"""The watcher's state machine: which state a mailbox watcher is in and what may follow.

::

    disconnected ──► connecting ──► selected ──► idling ◄──► fetching
          ▲              │             │           │            │
          │              ▼             ▼           ▼            ▼
          └────────── backoff ◄────────┴───────────┴────────────┘
                                  (any failure)
    any state ──► stopped

It holds no sockets: :class:`ingest.watcher.Watcher` drives it through :meth:`WatcherMachine.to`
(the one transition method, which refuses a move the diagram does not allow) and asks it for
the next backoff delay. Tests exercise it without a server.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class State(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    SELECTED = "selected"
    IDLING = "idling"
    FETCHING = "fetching"
    BACKOFF = "backoff"
    STOPPED = "stopped"


_ALLOWED: dict[State, frozenset[State]] = {
    State.DISCONNECTED: frozenset({State.CONNECTING, State.BACKOFF}),
    State.CONNECTING: frozenset({State.SELECTED, State.BACKOFF}),
    State.SELECTED: frozenset({State.FETCHING, State.IDLING, State.BACKOFF}),
    State.IDLING: frozenset({State.FETCHING, State.IDLING, State.BACKOFF}),
    State.FETCHING: frozenset({State.IDLING, State.FETCHING, State.BACKOFF}),
    State.BACKOFF: frozenset({State.CONNECTING}),
    State.STOPPED: frozenset(),
}


class TransitionError(RuntimeError):
    """A move the diagram does not allow (a bug in the driver, never a peer's doing)."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: ``min(base * 2^(n-1), cap)`` scaled into
    [50 %, 100 %] so a thousand watchers that failed together do not return together."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay_s(self, failures: int, rng: random.Random) -> float:
        if failures <= 0:
            return 0.0
        ceiling = min(self.base_s * (2.0 ** min(failures - 1, 30)), self.cap_s)
        return ceiling * (0.5 + 0.5 * rng.random())


@dataclass
class WatcherMachine:
    """State of one (account, folder) watcher; ``failures`` counts consecutive failures."""

    backoff: Backoff = field(default_factory=Backoff)
    state: State = State.DISCONNECTED
    failures: int = 0
    reconnects: int = 0
    last_error: str | None = None

    def to(self, new: State) -> State:
        """Move to ``new``; raises :class:`TransitionError` for a move not in the diagram."""
        if new is State.STOPPED:
            self.state = new
            return new
        if new not in _ALLOWED[self.state]:
            raise TransitionError(f"{self.state.value} -> {new.value} is not allowed")
        if new is State.CONNECTING and self.state is State.BACKOFF:
            self.reconnects += 1
        if new is State.IDLING:
            self.failures = 0  # a session that reached IDLE is healthy again
        self.state = new
        return new

    def fail(self, error: str, rng: random.Random) -> float:
        """Record a failure, move to backoff and return how long to wait."""
        self.failures += 1
        self.last_error = error
        self.to(State.BACKOFF)
        return self.backoff.delay_s(self.failures, rng)

    @property
    def stopped(self) -> bool:
        return self.state is State.STOPPED
