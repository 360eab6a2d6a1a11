"""Signed VERP return paths: ``b+<token>@<bounce-domain>``.

The token names the delivery a bounce is about and carries an HMAC under the secret key, so
a bounce to an address mailgate never minted (a forgery, a typo, a guess) is recognised and
changes nothing. Delivery mints the return path when it sends; the bounce listener and
bounce processing verify it. One module, so both always agree.

Token: ``<id>-<mac>``, both lower-case base32 without padding (MTAs may lower-case a local
part; base32 survives that), ``id`` the delivery id's UTF-8 bytes (at most 24), ``mac`` the
first 10 bytes of HMAC-SHA256(key, id). The whole local part stays under 64 characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from gateway.secretkey import derive_key

PREFIX = "b+"
#: The mailto unsubscribe address: ``unsubscribe+<token>@<bounce domain>`` (the same token).
UNSUBSCRIBE_PREFIX = "unsubscribe+"
MAX_ID_BYTES = 24
MAC_BYTES = 10


class VerpError(ValueError):
    """A delivery id that cannot be put in a VERP address."""


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _unb32(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    return base64.b32decode(padded)


@dataclass(frozen=True)
class VerpResult:
    """What a recipient address says: ``delivery_id`` when genuine, else why not."""

    delivery_id: str | None
    reason: str  # "ok", "not_verp", "malformed", "forged"

    @property
    def valid(self) -> bool:
        return self.delivery_id is not None


class Verp:
    """Mints and verifies VERP addresses under one secret."""

    def __init__(self, secret: bytes):
        self._key = derive_key(secret, "verp")

    def _mac(self, raw_id: bytes) -> bytes:
        return hmac.new(self._key, raw_id, hashlib.sha256).digest()[:MAC_BYTES]

    def token(self, delivery_id: str) -> str:
        raw = delivery_id.encode()
        if not raw or len(raw) > MAX_ID_BYTES:
            raise VerpError(f"delivery id must be 1-{MAX_ID_BYTES} bytes for VERP")
        return f"{_b32(raw)}-{_b32(self._mac(raw))}"

    def address(self, delivery_id: str, domain: str, token: str | None = None) -> str:
        """The return path for a delivery: ``b+<token>@domain`` (``token``: the one
        :meth:`token` already minted for this delivery, to skip minting it again)."""
        return f"{PREFIX}{token or self.token(delivery_id)}@{domain.lower()}"

    def unsubscribe_address(self, token: str, domain: str) -> str:
        """The List-Unsubscribe mailto of a delivery: ``unsubscribe+<token>@domain``."""
        return f"{UNSUBSCRIBE_PREFIX}{token}@{domain.lower()}"

    def verify(self, address: str) -> VerpResult:
        """Check a recipient address (any domain; the listener checks domains)."""
        local = address.strip().strip("<>").rpartition("@")[0].lower()
        if not local.startswith(PREFIX):
            return VerpResult(None, "not_verp")
        return self.verify_token(local[len(PREFIX) :])

    def verify_unsubscribe(self, address: str) -> VerpResult:
        """Check an ``unsubscribe+<token>@...`` address (``not_verp`` for any other)."""
        local = address.strip().strip("<>").rpartition("@")[0].lower()
        if not local.startswith(UNSUBSCRIBE_PREFIX):
            return VerpResult(None, "not_verp")
        return self.verify_token(local[len(UNSUBSCRIBE_PREFIX) :])

    def verify_token(self, token: str) -> VerpResult:
        """Check a bare token (``<id>-<mac>``, any case): the delivery id when genuine."""
        id_part, sep, mac_part = token.strip().lower().partition("-")
        if not sep or not id_part or not mac_part or len(token) > 200:
            return VerpResult(None, "malformed")
        try:
            raw = _unb32(id_part)
            mac = _unb32(mac_part)
        except (binascii.Error, ValueError):
            return VerpResult(None, "malformed")
        if not raw or len(raw) > MAX_ID_BYTES or len(mac) != MAC_BYTES:
            return VerpResult(None, "malformed")
        if not hmac.compare_digest(mac, self._mac(raw)):
            return VerpResult(None, "forged")
        try:
            return VerpResult(raw.decode(), "ok")
        except UnicodeDecodeError:
            return VerpResult(None, "malformed")
