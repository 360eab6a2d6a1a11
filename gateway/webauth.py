"""Who may read and change things through the dashboard and ``/api/``.

With ``dashboard_token`` set, every dashboard page and API call needs either
``Authorization: Bearer <token>`` (scripts, the CLI) or the session cookie the login form
sets (a browser: the token is the login password). A *mutating* request (POST) also needs:

* for a cookie session, the CSRF token the page carries (``X-CSRF-Token``, or the form
  field ``csrf_token``): an HMAC of the session, so another site cannot forge it even
  though the browser would send the cookie along;
* always, no foreign ``Origin`` header (a cross-site request is refused outright).

A bearer token is never attached by a browser on its own, so a request carrying it is not a
cross-site forgery and needs no CSRF token.

Without a token, the dashboard is read-only and answers loopback clients only (a listener
bound to a public address then shows nothing to the network); every POST is refused.

The session cookie is ``<expiry>.<nonce>.<hmac>``, keyed by the secret key and the token, so
changing the token ends every session. It is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from gateway.settings import Settings

COOKIE = "mailgate_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_S = 12 * 3600
FAILED_LOGIN_DELAY_S = 1.0


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """What a request may do: ``how`` it authenticated (bearer, session, loopback) and
    the session cookie when there is one (its CSRF token is derived from it)."""

    how: str
    session: str = ""

    @property
    def writable(self) -> bool:
        return self.how in ("bearer", "session")


def _refuse(status: int, message: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    return cls(text=f'{{"error": "{message}"}}', content_type="application/json")


class Guard:
    """Checks requests against the settings' token (see the module doc)."""

    def __init__(self, settings: Settings, secret_key: bytes):
        token = settings.dashboard_token
        self.token = token.get_secret_value() if token is not None else None
        self._key = hmac.new(
            secret_key, b"dashboard|" + (self.token or "").encode(), hashlib.sha256
        ).digest()

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    # -- sessions ------------------------------------------------------------------------

    def new_session(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_S)
        nonce = secrets.token_hex(12)
        return f"{expires}.{nonce}.{self._sign(f'session|{expires}|{nonce}')}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        parts = value.split(".")
        if self.token is None or len(parts) != 3 or not parts[0].isdigit():
            return False
        expires, nonce, sig = parts
        if int(expires) < (now or time.time()):
            return False
        return hmac.compare_digest(sig, self._sign(f"session|{expires}|{nonce}"))

    def csrf_token(self, session: str) -> str:
        return self._sign(f"csrf|{session}")[:40]

    def password_ok(self, password: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            password.encode(), self.token.encode()
        )

    async def failed_login(self) -> None:
        """Slow down guessing (every failed login costs the guesser a second)."""
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)

    # -- checks --------------------------------------------------------------------------

    def identify(self, request: web.Request) -> Access | None:
        """How the request is authenticated, or None."""
        if self.token is None:
            return Access("loopback") if is_loopback(request.remote) else None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return Access("bearer")
        cookie = request.cookies.get(COOKIE, "")
        if cookie and self.session_valid(cookie):
            return Access("session", cookie)
        return None

    def read(self, request: web.Request) -> Access:
        """The request may read, or an HTTP error is raised (401/403)."""
        access = self.identify(request)
        if access is not None:
            return access
        if self.token is None:
            raise _refuse(
                403, "the dashboard answers loopback clients only while no dashboard_token is set"
            )
        raise _refuse(401, "log in at /dashboard/login or send Authorization: Bearer <token>")

    async def write(self, request: web.Request) -> Access:
        """The request may change something, or an HTTP error is raised (401/403)."""
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            raise _refuse(403, "cross-origin request refused")
        if self.token is None:
            raise _refuse(403, "read-only: set dashboard_token to allow changes")
        access = self.read(request)
        if access.how == "session":
            given = request.headers.get(CSRF_HEADER, "")
            if not given and request.content_type == "application/x-www-form-urlencoded":
                given = str((await request.post()).get("csrf_token", ""))
            if not given or not hmac.compare_digest(given, self.csrf_token(access.session)):
                raise _refuse(403, "CSRF token missing or wrong (reload the dashboard)")
        return access
