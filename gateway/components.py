"""What the daemon runs: the Component contract and how components are found.

A component (the job worker, IMAP ingest, the bounce listener, the delivery pool) is built
by a factory registered as an entry point of group ``mailgate.components``::

    [project.entry-points."mailgate.components"]
    worker = "gateway.jobs.component:create"

The factory takes the :class:`~gateway.app.App` and the process's
:class:`~gateway.services.Services` and returns a :class:`Component`; a component lists the
services it uses in ``needs`` and the daemon builds them before it starts. Entry
points keep the dependency direction one way: ``gateway`` never imports ``ingest``,
``bounces`` or ``delivery``; they stand on it. Which components run is the ``components``
setting (``all`` by default).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.services import Service, Services

if TYPE_CHECKING:
    from gateway.app import App

from gateway.settings import COMPONENTS_GROUP as ENTRY_POINT_GROUP


@runtime_checkable
class Component(Protocol):
    """A long-running part of the daemon with an explicit lifecycle.

    ``start`` returns once the component takes work (listener bound, watchers started);
    ``stop`` first stops intake, then lets in-flight work finish until ``deadline`` (a
    ``loop.time()`` value), then cancels what is left, leaving nothing lost (unfinished jobs
    go back to their queue). ``stop`` must be safe to call after a failed ``start``.
    """

    name: str
    needs: tuple[Service[Any], ...]

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...

    def ready(self) -> bool: ...


ComponentFactory = Callable[["App", Services], Component]


class ComponentError(Exception):
    """A configured component does not exist or could not be loaded."""


def discover() -> dict[str, ComponentFactory]:
    """Every component factory installed, by entry point name."""
    found: dict[str, ComponentFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def select(
    wanted: list[str], available: dict[str, ComponentFactory]
) -> dict[str, ComponentFactory]:
    """The factories named by the ``components`` setting (``all``, ``none`` or names)."""
    if wanted == ["all"]:
        return dict(sorted(available.items()))
    if wanted in ([], ["none"]):
        return {}
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ComponentError(
            f"components: unknown {missing}; installed: {sorted(available) or 'none'}"
        )
    return {name: available[name] for name in wanted}
