"""The signed warmup marker: a Message-ID that mailgate recognises and a filter cannot.

Every warmup message's Message-ID is ``<{nonce}.{mac}@{domain}>``: ``nonce`` 12 random
lower-case base32 characters, ``mac`` the first 8 bytes of HMAC-SHA256 over ``nonce`` and the
domain under a subkey of the process secret, lower-case base32 (13 characters). To a spam
filter it is an ordinary random Message-ID (no fixed header, no fixed text, nothing the same
from one message to the next); to mailgate it verifies. A Message-ID of the same shape whose
MAC does not verify (a guess, a copy under another domain, a tampered nonce) is ordinary mail.

Replies carry their own marker (their own Message-ID), so a reply is recognised the same
way. Delivery mints, ingest verifies (through :func:`gateway.messagekind.classify_kind`'s
``warmup`` verdict), and the warmup steps find a message by its Message-ID: one module, so
all three always agree. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from gateway.secretkey import derive_key

NONCE_CHARS = 12
MAC_BYTES = 8
_SHAPE = re.compile(r"^\s*<([a-z2-7]{12})\.([a-z2-7]{13})@([^<>@\s]{1,253})>\s*$")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


class WarmupMarker:
    """Mints and verifies warmup Message-IDs under one secret."""

    def __init__(self, secret: bytes):
        self._key = derive_key(secret, "warmup-marker")

    def _mac(self, nonce: str, domain: str) -> str:
        digest = hmac.new(self._key, f"{nonce}@{domain}".encode(), hashlib.sha256).digest()
        return _b32(digest[:MAC_BYTES])

    def mint(self, domain: str, nonce: str | None = None) -> str:
        """A new marked Message-ID (with angle brackets) on ``domain``."""
        domain = domain.strip().lower()
        nonce = nonce or _b32(secrets.token_bytes(8))[:NONCE_CHARS]
        return f"<{nonce}.{self._mac(nonce, domain)}@{domain}>"

    def verify(self, message_id: str | None) -> bool:
        """True only for a Message-ID this secret minted (case-insensitive: some MTAs and
        clients lower-case the header; the marker is lower-case already)."""
        if not message_id:
            return False
        m = _SHAPE.match(message_id.lower())
        if m is None:
            return False
        nonce, mac, domain = m.groups()
        return hmac.compare_digest(mac, self._mac(nonce, domain))
