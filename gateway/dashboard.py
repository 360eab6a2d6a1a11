"""The queue dashboard at ``/dashboard`` (entry point ``dashboard`` of group ``mailgate.http``).

The daemon serves it itself: one server-rendered page, one stylesheet and one small script
(``gateway/static``), no CDN and no library, so it works offline. The script reads the JSON
API (:mod:`gateway.api`) every five seconds and draws the queues, the last hour's throughput
(a canvas chart), the dead letters with retry and delete (each asks for a confirmation
first), live workers and their heartbeat age, IMAP watchers by state, the bounce listener,
the delivery pool, recent bounces by reason and warmup placement when there is any.

Access (:mod:`gateway.webauth`): with ``dashboard_token`` set, ``/dashboard/login`` takes
the token as the password and sets a session cookie; the page carries the session's CSRF
token for its changes. Without a token the page is read-only and loopback-only. Every
response forbids framing and loads nothing from elsewhere (Content-Security-Policy).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from importlib.resources import files
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.webauth import COOKIE, SESSION_S, Guard

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.services import Services

STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>mailgate dashboard</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg">
</head>
<body data-writable="{writable}">
<header><h1>mailgate</h1><span class="muted">{version}</span>
<span id="health" class="badge">loading</span><span class="grow"></span>
<span class="muted" id="updated"></span><span class="muted">{access}</span>{logout}</header>
<main>
<section class="wide"><ul id="problems"></ul><div id="message"></div></section>
<section class="wide"><h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th class="n">waiting</th><th class="n">active</th>
<th class="n">delayed</th><th class="n">failed</th></tr></thead><tbody></tbody></table>
<p class="muted">delayed <b id="total-delayed">-</b> · dead letters <b id="total-dead">-</b>
· held by workers <b id="total-processing">-</b></p></section>
<section><h2>Throughput, last hour (per minute: completed, failed)</h2>
<canvas id="chart" height="160"></canvas><p class="muted" id="throughput-total"></p></section>
<section><h2>Workers</h2><table id="workers"><thead><tr><th>worker</th><th>status</th>
<th class="n">heartbeat s</th><th class="n">in flight</th><th class="n">done</th></tr></thead>
<tbody></tbody></table>
<h2>Daemons</h2><table id="instances"><thead><tr><th>instance</th><th>version</th>
<th class="n">report s</th><th>components</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>Dead letters (<span id="dead-total">-</span>)
<button data-action="retry" data-all disabled>Retry all</button>
<button data-action="delete" data-all disabled>Delete all</button></h2>
<table id="dlq"><thead><tr><th>job</th><th>queue</th><th>error</th><th>failed at</th><th></th>
</tr></thead><tbody></tbody></table></section>
<section><h2>IMAP watchers</h2><table id="watchers"><thead><tr><th>state</th>
<th class="n">watchers</th></tr></thead><tbody></tbody></table><ul id="backoff"></ul></section>
<section><h2>Bounce listener</h2><ul id="listener"></ul>
<h2>Delivery pool</h2><ul id="delivery"></ul></section>
<section><h2>Bounces by reason, last 24 hours</h2><table id="bounces"><thead><tr><th>reason</th>
<th>outcome</th><th class="n">reports</th></tr></thead><tbody></tbody></table></section>
<section id="warmup" hidden><h2>Warmup placement, last 24 hours</h2><ul></ul></section>
</main>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p>
<button value="no">Cancel</button>
<button class="primary" id="confirm-yes" value="yes">Confirm</button>
</form></dialog>
<script src="/dashboard/static/dashboard.js"></script>
</body></html>
"""

LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailgate: log in</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg"></head>
<body><form class="login" method="post" action="/dashboard/login">
<h1>mailgate dashboard</h1><p class="error">{error}</p>
<label for="password">Token (dashboard_token)</label>
<input id="password" name="password" type="password" autocomplete="current-password" autofocus>
<button class="primary" type="submit">Log in</button></form></body></html>
"""


def _page(text: str, status: int = 200) -> web.Response:
    response = web.Response(text=text, content_type="text/html", status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


class Dashboard:
    def __init__(self, app: App):
        self.app = app
        self.guard = Guard(app.settings, app.secret_key)

    async def page(self, request: web.Request) -> web.Response:
        from gateway.daemon import mailgate_version

        access = self.guard.identify(request)
        if access is None and self.guard.token is not None:
            raise web.HTTPSeeOther("/dashboard/login")
        access = access or self.guard.read(request)  # no token: 403 unless loopback
        csrf = self.guard.csrf_token(access.session) if access.how == "session" else ""
        logout = ""
        if access.how == "session":
            logout = (
                '<form method="post" action="/dashboard/logout">'
                f'<input type="hidden" name="csrf_token" value="{html.escape(csrf)}">'
                '<button type="submit">Log out</button></form>'
            )
        described = {
            "session": "logged in",
            "bearer": "bearer token",
            "loopback": "read-only (no dashboard_token set)",
        }[access.how]
        return _page(
            PAGE.format(
                csrf=html.escape(csrf),
                writable="1" if access.writable else "0",
                version=html.escape(mailgate_version()),
                access=html.escape(described),
                logout=logout,
            )
        )

    async def login_form(self, request: web.Request) -> web.Response:
        if self.guard.token is None:
            raise web.HTTPSeeOther("/dashboard")
        return _page(LOGIN.format(error=""))

    async def login(self, request: web.Request) -> web.Response:
        if self.guard.token is None:
            raise web.HTTPSeeOther("/dashboard")
        origin = request.headers.get("Origin")
        if origin and origin != "null" and origin.split("://", 1)[-1] != request.host:
            return _page(LOGIN.format(error="cross-origin login refused"), 403)
        form = await request.post()
        if not self.guard.password_ok(str(form.get("password", ""))):
            await self.guard.failed_login()
            return _page(LOGIN.format(error="wrong token"), 401)
        response = web.HTTPSeeOther("/dashboard")
        response.set_cookie(
            COOKIE,
            self.guard.new_session(),
            max_age=SESSION_S,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        await self.guard.write(request)
        response = web.HTTPSeeOther("/dashboard/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def static(self, request: web.Request) -> web.Response:
        # The script and stylesheet hold no data: served to anyone, like the login form.
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = files("gateway").joinpath("static", name).read_bytes()
        response = web.Response(body=body, content_type=STATIC[name], charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


def routes(app: App, services: Services) -> Sequence[web.AbstractRouteDef]:
    dashboard = Dashboard(app)
    return [
        web.get("/dashboard", dashboard.page),
        web.get("/dashboard/login", dashboard.login_form),
        web.post("/dashboard/login", dashboard.login),
        web.post("/dashboard/logout", dashboard.logout),
        web.get("/dashboard/static/{name}", dashboard.static),
    ]
