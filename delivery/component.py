"""The delivery pool as a daemon component (entry point ``delivery``): it owns nothing
that runs on its own, but at shutdown it stops pooling so idle SMTP connections QUIT and
connections in use close when their transaction ends (the worker drains those)."""

from __future__ import annotations

from delivery.service import _EXTRA_KEY, Sender
from gateway.app import App


class DeliveryComponent:
    name = "delivery"

    def __init__(self, app: App):
        self.app = app

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        sender = self.app.extras.get(_EXTRA_KEY)
        if isinstance(sender, Sender):
            await sender.aclose()

    def ready(self) -> bool:
        return True


def create(app: App) -> DeliveryComponent:
    return DeliveryComponent(app)
