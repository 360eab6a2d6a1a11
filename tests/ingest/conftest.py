"""Ingest fixtures: settings tuned for fast tests, and a started component."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.app import App
from gateway.settings import Settings
from ingest.component import IngestComponent


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with ingest tuned for tests (no stagger, fast polls and backoff)."""
    return settings.model_copy(
        update={
            "ingest_account_poll_s": 0.5,
            "ingest_start_stagger_s": 0.0,
            "ingest_backoff_base_s": 0.2,
            "ingest_backoff_max_s": 2.0,
            "ingest_command_timeout_s": 10.0,
            "ingest_connect_timeout_s": 5.0,
            "ingest_lease_ttl_s": 3.0,
        }
    )


@pytest.fixture
async def ingest(app: App) -> AsyncIterator[Callable[..., Any]]:
    """``await ingest()`` starts an IngestComponent on ``app``; stopped after the test."""
    made: list[IngestComponent] = []

    async def start(**kw: Any) -> IngestComponent:
        component = IngestComponent(app, **kw)
        made.append(component)
        await component.start()
        return component

    yield start
    for component in made:
        import asyncio

        await component.stop(asyncio.get_running_loop().time() + 5)
