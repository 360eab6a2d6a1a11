"""The SSRF guard as webhooks use it: :mod:`gateway.urlguard` under the
``webhook_allow_private`` setting, refusals raised as :class:`EndpointRefused`.

Enforced where the connection is made, not only when the endpoint is added (see
:mod:`gateway.urlguard`): a name that later resolves to a private address is refused at
connect time.
"""

from __future__ import annotations

from aiohttp.abc import AbstractResolver

from gateway import urlguard
from gateway.urlguard import address_allowed
from webhooks import EndpointRefused

__all__ = ["GuardedResolver", "address_allowed", "check_url"]


def _policy(allow_private: bool) -> urlguard.Policy:
    return urlguard.Policy("webhook URL", "MAILGATE_WEBHOOK_ALLOW_PRIVATE", allow_private)


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or names a refused IP literal."""
    refusal = urlguard.refusal(url, _policy(allow_private))
    if refusal is not None:
        raise EndpointRefused(refusal)


class GuardedResolver(urlguard.GuardedResolver):
    """The guarded resolver of the webhook session (refusals are EndpointRefused)."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None):
        super().__init__(_policy(allow_private), error=EndpointRefused, inner=inner)
