"""A tenant's webhook endpoint for tests: a real aiohttp server on 127.0.0.1 that verifies
Standard Webhooks signatures with its OWN implementation (not mailgate's) and answers
what the test scripts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: float = 300) -> bool:
    """The spec, written again: key = base64 after ``whsec_``; signed content
    ``id.timestamp.body``; any ``v1,`` signature of the space-separated list may match;
    the timestamp must be recent."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance_s:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for item in headers.get("webhook-signature", "").split(" "):
        version, _, sig = item.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


@dataclass
class Received:
    webhook_id: str
    timestamp: int
    body: bytes
    valid: dict[str, bool]  # per secret the receiver holds
    status: int
    at: float


@dataclass
class Receiver:
    """Answers ``answer(webhook_id, n)`` (n: how many times this id came, from 1)."""

    secrets: list[str] = field(default_factory=list)
    answer: Callable[[str, int], int] = lambda _id, _n: 200
    got: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        msg_id = headers.get("webhook-id", "")
        n = 1 + sum(1 for r in self.got if r.webhook_id == msg_id)
        status = self.answer(msg_id, n)
        self.got.append(
            Received(
                msg_id,
                int(headers.get("webhook-timestamp", "0") or 0),
                body,
                {s: verify(s, headers, body) for s in self.secrets},
                status,
                time.monotonic(),
            )
        )
        return web.Response(status=status, text="ok" if status < 300 else "no")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def delivered(self) -> list[Received]:
        return [r for r in self.got if 200 <= r.status < 300]

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.delivered()]

    def bodies(self) -> list[Any]:
        import json

        return [json.loads(r.body) for r in self.delivered()]
