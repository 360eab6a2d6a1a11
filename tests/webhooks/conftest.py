"""Fixtures for webhook tests: settings allowing 127.0.0.1 endpoints, a receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.settings import Settings
from tests.webhooks.receiver import Receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the SSRF guard opened for 127.0.0.1 (as the issue says)."""
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()
