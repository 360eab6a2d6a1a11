"""The SSRF guard for every URL the daemon fetches or calls on someone's behalf (webhook
endpoints, import files): loopback, link-local, private and other non-public addresses
(cloud metadata at 169.254.169.254, the database on 10.x, ...) are refused unless the
caller's ``*_allow_private`` setting says otherwise.

Enforced where the connection is made, not only when a URL is accepted: a session built with
:class:`GuardedResolver` drops every address the guard refuses (a name that resolved to a
public address when it was checked and to a private one later, DNS rebinding, is refused at
connect time). aiohttp never asks the resolver about a literal IP, so :func:`check_url`
refuses those before the request; redirects must not be followed (a redirect to a literal
IP would bypass the resolver).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


@dataclass(frozen=True)
class Policy:
    """Who asks and how the answer is worded: ``what`` names the URL ("webhook URL"),
    ``setting`` the environment variable that allows private addresses."""

    what: str
    setting: str
    allow_private: bool


class UrlRefused(Exception):
    """The URL may not be fetched (a private address, a bad scheme)."""


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """True when a connection to ``address`` (an IP literal) is allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def refusal(url: str, policy: Policy) -> str | None:
    """Why ``url`` may not be fetched, or None: not http(s), or an IP literal (or
    ``localhost``) the policy refuses. A host name is judged when it is resolved. The
    verdict depends on nothing else, so it is kept per (URL, policy)."""
    return _refusal(url, policy)


@functools.lru_cache(maxsize=4096)
def _refusal(url: str, policy: Policy) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{policy.what} must be http:// or https:// with a host: {url!r}"
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not policy.allow_private and host.lower().rstrip(".") in (
            "localhost",
            "localhost.localdomain",
        ):
            return f"{policy.what} {url!r} names a loopback host"
        return None
    if not address_allowed(host, allow_private=policy.allow_private):
        return (
            f"{policy.what} {url!r} is a private, loopback or link-local address "
            f"({policy.setting}=true allows it)"
        )
    return None


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, keeping only allowed addresses; raises
    ``error`` (the caller's exception type) when none is left."""

    def __init__(
        self,
        policy: Policy,
        *,
        error: type[Exception] = UrlRefused,
        inner: AbstractResolver | None = None,
    ):
        self.policy = policy
        self.error = error
        self._inner = inner or DefaultResolver()

    @property
    def allow_private(self) -> bool:
        return self.policy.allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allow = self.policy.allow_private
        kept = [r for r in found if address_allowed(r["host"], allow_private=allow)]
        if not kept:
            raise self.error(
                f"{self.policy.what} host {host!r} resolves only to private, loopback or "
                f"link-local addresses ({self.policy.setting}=true allows them)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()
