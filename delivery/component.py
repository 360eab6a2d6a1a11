"""The delivery pool as a daemon component (entry point ``delivery``).

It runs nothing of its own: at start it builds the process's :data:`~delivery.service.SENDER`
(the SMTP pool and the DKIM signer process) so the first send does not wait for the signer
to start. The daemon closes the Sender (idle connections QUIT, the signer exits) after
every component, the worker's drain included, has stopped.
"""

from __future__ import annotations

from delivery.service import SENDER
from gateway.app import App
from gateway.services import Services


class DeliveryComponent:
    name = "delivery"
    needs = (SENDER,)

    def __init__(self, app: App, services: Services):
        self.app = app
        self.services = services

    async def start(self) -> None:
        self.services.get(SENDER).start_helpers()

    async def stop(self, deadline: float) -> None:
        return None

    def ready(self) -> bool:
        return True


def create(app: App, services: Services) -> DeliveryComponent:
    return DeliveryComponent(app, services)
