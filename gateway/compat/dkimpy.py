"""dkimpy 1.1: the pieces of dkimpy that ``delivery.dkimsign`` composes itself.

dkimpy signs RSA in pure Python (~6 ms per RSA-2048 signature here) and runs redundant
passes in ``hash_headers`` (a second ``b=`` regex strip, a ``lower()`` per header per name
looked for). ``delivery.dkimsign`` therefore takes only dkimpy's canonicalisation and
folding, selects and hashes the headers itself in dkimpy's order, and signs the digest with
``cryptography`` (~0.25 ms): bench/README.md "Outbound delivery" step 5, signer CPU 0.40 ->
0.36 ms a message for the header work alone, and the RSA step ~25 x cheaper. The result is
byte for byte what ``dkim.sign`` writes (tests/delivery: a Hypothesis test against
``dkim.sign``), which is why the version is pinned here: the rewrite follows this dkimpy's
selection and hashing order.

Touched: ``dkim.CanonicalizationPolicy`` (``from_c_value``, ``to_c_value``,
``canonicalize_headers``, ``canonicalize_body``) and ``dkim.fold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import dkim

from gateway.compat import require

VERSION = require("dkimpy", ("1.1.",))


class Canonicalization:
    """One ``c=`` policy, e.g. ``relaxed/simple``."""

    def __init__(self, header: bytes, body: bytes):
        self._policy = dkim.CanonicalizationPolicy.from_c_value(header + b"/" + body)
        self.c_value: bytes = self._policy.to_c_value()

    def headers(self, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return list(self._policy.canonicalize_headers(list(headers)))

    def body(self, body: bytes) -> bytes:
        return bytes(self._policy.canonicalize_body(body))


def fold(value: bytes, namelen: int) -> bytes:
    """dkimpy's header folding (where it breaks the DKIM-Signature's lines)."""
    return bytes(dkim.fold(value, namelen=namelen))
