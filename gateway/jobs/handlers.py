"""Job handlers: what runs a job, found by the family of the queue it came from.

A handler is registered as an entry point of group ``mailgate.handlers``, named after its
queue family (:mod:`gateway.jobs.contracts`), naming a factory ``create(app, services) ->
HandlerSpec`` (``services``: :class:`gateway.services.Services`, for what a handler shares
with a component, such as delivery's Sender)::

    [project.entry-points."mailgate.handlers"]
    email-processing = "ingest.jobs:create_handler"

The handler's coroutine receives the job and its payload already validated against the
family's model. A family with no registered handler is not consumed: ``mailgate enqueue``
refuses its queues and ``mailgate queues`` shows them as such (no stub handler ever takes
them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from gateway.jobs.contracts import (
    FAMILY_BY_NAME,
    QUEUE_FAMILY,
    QUEUE_PRIORITY,
    Payload,
    validate,
)
from gateway.jobs.envelope import Job
from gateway.services import Services

if TYPE_CHECKING:
    from gateway.app import App

ENTRY_POINT_GROUP = "mailgate.handlers"

# Seed 004: email workers are I/O bound (50-100 per node), imports CPU/memory bound (2-5).
DEFAULT_CONCURRENCY: dict[str, int] = {"email-sending": 50, "import": 2}
OTHERS_CONCURRENCY = 10

# run(job, payload): the payload is the family's model, validated by the worker.
JobFunction = Callable[[Job, Any], Awaitable[Any]]


@dataclass(frozen=True)
class HandlerSpec:
    """A handler for one queue family: the coroutine, how many may run at once, and the
    payload model the worker validates each job against before running it (the family's
    contract; the job runtime's own tests give the permissive base model)."""

    family: str
    run: JobFunction
    concurrency: int | None = None
    payload: type[Payload] | None = None

    def parse(self, data: dict[str, Any]) -> Payload:
        """The job's payload as the handler's model (:class:`PayloadInvalid` if not)."""
        model = self.payload or FAMILY_BY_NAME[self.family].payload
        return validate(self.family, model, data)

    def __post_init__(self) -> None:
        if self.family not in FAMILY_BY_NAME:
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


HandlerFactory = Callable[["App", Services], HandlerSpec]


def discover() -> dict[str, HandlerFactory]:
    """Installed handler factories by entry-point name."""
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def installed_families() -> frozenset[str]:
    """The queue families an installed handler consumes (entry-point names; nothing is
    imported, so the CLI can ask cheaply)."""
    return frozenset(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)) & set(FAMILY_BY_NAME)


def build(
    app: App, services: Services, factories: dict[str, HandlerFactory]
) -> dict[str, HandlerSpec]:
    """Handler specs by family; two handlers for one family is a configuration error."""
    specs: dict[str, HandlerSpec] = {}
    for name, factory in sorted(factories.items()):
        spec = factory(app, services)
        if spec.family != name:
            raise ValueError(f"handler entry point {name!r} builds a {spec.family!r} handler")
        if spec.family in specs:
            raise ValueError(f"two handlers for queue family {spec.family!r} (one is {name!r})")
        specs[spec.family] = spec
    return specs
