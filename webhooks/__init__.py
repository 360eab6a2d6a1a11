"""Events out: the outbox fanned out to tenants' endpoints, signed to the Standard Webhooks
specification (standardwebhooks.com).

Modules: :mod:`.signing` (pure: secrets, signatures), :mod:`.ssrf` (which addresses an
endpoint may resolve to), :mod:`.store` (endpoints, attempts, deliveries in PostgreSQL),
:mod:`.dispatch` (the outbox reader, a daemon component), :mod:`.sender` (the
``queue:webhook:process`` handler: one aiohttp session, per-endpoint concurrency),
:mod:`.commands` (``mailgate webhooks``).

Exceptions::

    WebhookError
    ├── EndpointRefused   the URL may not be called (SSRF guard, scheme)
    └── SecretError       a secret is not a whsec_ base64 key
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base of the webhook package's errors."""


class EndpointRefused(WebhookError):
    """The endpoint's URL may not be called (a private address, a bad scheme)."""


class SecretError(WebhookError):
    """A signing secret is not ``whsec_`` followed by base64."""
