"""What one part of the daemon builds once and other parts use: declared, typed, closed.

A *service* is an object built once per process and shared: delivery's
:class:`~delivery.service.Sender` (its SMTP pool and DKIM signer process), each package's
Prometheus metrics. The package that provides it declares a module-level :class:`Service`
(its name, how to build it from the :class:`~gateway.app.App`, how to close it); a
component or job handler that needs it names that object, and receives it from the
:class:`Services` the daemon passes to every factory::

    SENDER = Service("delivery.sender", build=_build_sender, close=Sender.aclose)
    ...
    sender = services.get(SENDER)

The daemon builds what its components and handlers declare they need before they start
(a service's builder may ask for others: dependency order falls out), and closes every
service, in reverse order of building, after the components have stopped. Nothing is
looked up by a string: a missing provider is an import error, a cycle a
:class:`ServiceError` at start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceError(Exception):
    """A service cannot be built (a cycle between builders, or use after close)."""


@dataclass(frozen=True, eq=False)
class Service(Generic[T]):
    """A shared object one package provides: its name, builder and (optional) closer."""

    name: str
    build: Callable[[App, Services], T]
    close: Callable[[T], Awaitable[None]] | None = None


class Services:
    """The services of one process, built on first :meth:`get` and closed together."""

    def __init__(self, app: App):
        self.app = app
        self._built: dict[Service[Any], Any] = {}
        self._building: list[Service[Any]] = []
        self._closed = False

    def get(self, service: Service[T]) -> T:
        """The one instance of ``service`` in this process (built now if needed)."""
        if service in self._built:
            return cast(T, self._built[service])
        if self._closed:
            raise ServiceError(f"service {service.name} asked for after the services closed")
        if service in self._building:
            chain = " -> ".join(s.name for s in [*self._building, service])
            raise ServiceError(f"services depend on each other in a cycle: {chain}")
        self._building.append(service)
        try:
            value = service.build(self.app, self)
        finally:
            self._building.pop()
        self._built[service] = value
        return value

    def prepare(self, needs: tuple[Service[Any], ...]) -> None:
        """Build everything in ``needs`` now (the daemon does this before a start)."""
        for service in needs:
            self.get(service)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._built]

    async def aclose(self) -> None:
        """Close every built service, the last built first; errors are logged, not raised,
        so one failing close does not keep the others open."""
        self._closed = True
        for service, value in reversed(list(self._built.items())):
            if service.close is None:
                continue
            try:
                await service.close(value)
            except Exception:  # logged: the other services still close
                log.exception("service did not close cleanly", extra={"service": service.name})
        self._built.clear()
