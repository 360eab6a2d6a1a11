"""Job handlers: what runs a job, found by the family of the queue it came from.

A handler is registered as an entry point of group ``mailgate.handlers`` naming a factory
``create(app) -> HandlerSpec``::

    [project.entry-points."mailgate.handlers"]
    email-processing = "ingest.jobs:create_handler"

A family with no registered handler is simply not consumed: its jobs wait for the version
of mailgate that handles them (no stub handler ever takes them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from gateway.jobs.envelope import Job
from gateway.jobs.keys import QUEUE_FAMILY, QUEUE_PRIORITY

if TYPE_CHECKING:
    from gateway.app import App

ENTRY_POINT_GROUP = "mailgate.handlers"

# Seed 004: email workers are I/O bound (50-100 per node), imports CPU/memory bound (2-5).
DEFAULT_CONCURRENCY: dict[str, int] = {"email-sending": 50, "import": 2}
OTHERS_CONCURRENCY = 10

JobFunction = Callable[[Job], Awaitable[Any]]


@dataclass(frozen=True)
class HandlerSpec:
    """A handler for one queue family: the coroutine and how many may run at once."""

    family: str
    run: JobFunction
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.family not in set(QUEUE_FAMILY.values()):
            raise ValueError(f"unknown queue family {self.family!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")

    @property
    def slots(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return DEFAULT_CONCURRENCY.get(self.family, OTHERS_CONCURRENCY)

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues this handler consumes, in priority order."""
        return tuple(q for q in QUEUE_PRIORITY if QUEUE_FAMILY[q] == self.family)


HandlerFactory = Callable[["App"], HandlerSpec]


def discover() -> dict[str, HandlerFactory]:
    """Installed handler factories by entry-point name."""
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def build(app: App, factories: dict[str, HandlerFactory]) -> dict[str, HandlerSpec]:
    """Handler specs by family; two handlers for one family is a configuration error."""
    specs: dict[str, HandlerSpec] = {}
    for name, factory in sorted(factories.items()):
        spec = factory(app)
        if spec.family in specs:
            raise ValueError(f"two handlers for queue family {spec.family!r} (one is {name!r})")
        specs[spec.family] = spec
    return specs
