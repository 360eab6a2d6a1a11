"""The SSRF guard: a webhook endpoint may not reach loopback, link-local, private or other
non-public addresses (cloud metadata at 169.254.169.254, the database on 10.x, ...) unless
``webhook_allow_private`` is set.

Enforced where the connection is made, not only when the endpoint is added: the aiohttp
session resolves names through :class:`GuardedResolver`, which drops every address the
guard refuses (a name that resolved to a public address when it was added and to a
private one later, DNS rebinding, is refused at connect time). aiohttp never asks the
resolver about a literal IP, so :func:`check_url` refuses those before the request.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from webhooks import EndpointRefused


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """True when an endpoint may connect to ``address`` (an IP literal)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or names a refused IP literal (the verdict is
    kept per URL: it depends on nothing else, and every attempt asks)."""
    refusal = _refusal(url, allow_private)
    if refusal is not None:
        raise EndpointRefused(refusal)


@functools.lru_cache(maxsize=4096)
def _refusal(url: str, allow_private: bool) -> str | None:
    try:
        _check_url(url, allow_private=allow_private)
    except EndpointRefused as exc:
        return str(exc)
    return None


def _check_url(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointRefused(f"webhook URL must be http:// or https:// with a host: {url!r}")
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not allow_private and host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
            raise EndpointRefused(f"webhook URL {url!r} names a loopback host") from None
        return  # a name: checked when it is resolved (GuardedResolver)
    if not address_allowed(host, allow_private=allow_private):
        raise EndpointRefused(
            f"webhook URL {url!r} is a private, loopback or link-local address "
            "(MAILGATE_WEBHOOK_ALLOW_PRIVATE=true allows it)"
        )


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, keeping only allowed addresses."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None):
        self.allow_private = allow_private
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if address_allowed(r["host"], allow_private=self.allow_private)]
        if not kept:
            raise EndpointRefused(
                f"webhook host {host!r} resolves only to private, loopback or link-local "
                "addresses (MAILGATE_WEBHOOK_ALLOW_PRIVATE=true allows them)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()
