"""Standard Webhooks signatures (pure): ``webhook-signature: v1,<base64 HMAC-SHA256>``.

The signed content is ``<webhook-id>.<webhook-timestamp>.<body>``; the key is the base64
part of a ``whsec_`` secret. An endpoint may have several secrets at once (rotation): every
one signs, and the header carries each signature, space-separated, newest first, so a
receiver holding either the old or the new secret verifies the message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from webhooks import SecretError

PREFIX = "whsec_"
SECRET_BYTES = 24  # 192-bit keys, like the reference implementations mint


def new_secret() -> str:
    """A fresh ``whsec_`` secret."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@functools.lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional, as in the spec).
    Cached: every attempt signs with the same few secrets (bench/webhooks.py)."""
    text = secret.strip().removeprefix(PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < 16 or len(key) > 64:
        raise SecretError("a webhook secret's key is 16-64 bytes")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)


def headers(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt (a fresh timestamp per attempt, the same id)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, msg_id, timestamp, body),
        "content-type": "application/json",
    }
