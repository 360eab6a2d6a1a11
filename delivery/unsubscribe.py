"""Unsubscribe intake over HTTP (entry point ``unsubscribe`` of group ``mailgate.http``).

``POST /unsubscribe/<token>`` is RFC 8058's one-click unsubscribe: the mailbox provider
POSTs ``List-Unsubscribe=One-Click`` (form-encoded or multipart) to the URL of the
message's ``List-Unsubscribe`` header; the answer is 200 with a line of text: no form, no
cookie, no redirect. ``GET`` of the same URL (a person clicking the link) shows a small
page whose button makes that POST; a GET never unsubscribes (link scanners fetch URLs).
A forged, malformed or unknown token gets 404 and changes nothing. The effect is
:func:`gateway.unsubscribe.apply_unsubscribe` (suppression, delivery mark, counter, event;
idempotent).

Only this path is meant to be public: the HTTP listener stays on loopback and a reverse
proxy exposes ``/unsubscribe/`` alone (README: "Unsubscribe links").
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.unsubscribe import apply_unsubscribe
from gateway.verp import Verp

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.services import Services

ONE_CLICK = "List-Unsubscribe=One-Click"
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">
<p>Stop receiving these emails?</p>
<form method="post" action="{action}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form></body></html>
"""


class UnsubscribeRoutes:
    def __init__(self, app: App):
        self.app = app
        self.verp = Verp(app.secret_key)

    def _delivery(self, request: web.Request) -> str:
        token = request.match_info["token"]
        found = self.verp.verify_token(token)
        if found.delivery_id is None:
            raise web.HTTPNotFound(text="not found\n", headers=_HEADERS)
        return found.delivery_id

    async def page(self, request: web.Request) -> web.Response:
        delivery_id = self._delivery(request)
        exists = await self.app.db.fetchval(
            "SELECT 1 FROM email_deliveries WHERE id = $1", delivery_id
        )
        if exists is None:
            raise web.HTTPNotFound(text="not found\n", headers=_HEADERS)
        action = html.escape(request.path, quote=True)
        return web.Response(
            text=_PAGE.format(action=action), content_type="text/html", headers=_HEADERS
        )

    async def one_click(self, request: web.Request) -> web.Response:
        delivery_id = self._delivery(request)
        body = await request.read()
        if not _is_one_click(body, request.content_type):
            raise web.HTTPBadRequest(text=f"the body must be {ONE_CLICK}\n", headers=_HEADERS)
        async with self.app.db.acquire() as conn:
            done = await apply_unsubscribe(conn, delivery_id, source="one_click")
        if done is None:
            raise web.HTTPNotFound(text="not found\n", headers=_HEADERS)
        return web.Response(text="You are unsubscribed.\n", headers=_HEADERS)


def _is_one_click(body: bytes, content_type: str) -> bool:
    """RFC 8058: the POST carries ``List-Unsubscribe=One-Click``, form-encoded or as a
    multipart/form-data field (both are allowed)."""
    text = body[:4096].decode("utf-8", "replace")
    if content_type == "multipart/form-data":
        return 'name="List-Unsubscribe"' in text and "One-Click" in text
    return any(part.strip() == ONE_CLICK for part in text.split("&"))


def routes(app: App, services: Services) -> Sequence[web.AbstractRouteDef]:
    """Entry point (group ``mailgate.http``)."""
    handlers = UnsubscribeRoutes(app)
    return [
        web.get("/unsubscribe/{token}", handlers.page),
        web.post("/unsubscribe/{token}", handlers.one_click),
    ]
