"""DKIM signing: dkimpy's canonicalisation, ``cryptography``'s signatures.

dkimpy signs RSA in pure Python (about 6 ms per RSA-2048 signature here) and re-parses the
PEM on every call; ``cryptography`` signs the same digest in about 0.25 ms. So the bytes
that are signed come from dkimpy (through the version-checked seam
:mod:`gateway.compat.dkimpy`): its canonicalisation policy canonicalises the body and
headers, its ``fold`` folds the header, and the tag list, header selection and hashing
order are those of ``dkim.DKIM.sign``/``dkim.hash_headers``, written out here without their
redundant passes (a second ``b=`` regex strip, a lower() per name per name looked for: 68 ->
50 us a message). A test checks the header is byte for byte the one ``dkim.sign`` writes
for the same message, key and time. Only the last step differs: RSASSA-PKCS1-v1_5 over the
SHA-256 digest (``Prehashed``), or Ed25519 over the same digest (RFC 8463, which is what
dkimpy signs too). The tests verify every signature with ``dkim.verify``.

A :class:`DkimKey` is parsed once. Keys come from PEM files (``delivery_dkim_keys``) or the
``dkim_keys`` table, sealed with the process secret. Where the work runs: in the helper
process of :mod:`delivery.signer` by default (:func:`sign_message_offloaded`), which calls
:func:`signature_headers` here; on the event loop otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from delivery.errors import RouteError
from gateway.compat.dkimpy import Canonicalization, fold

if TYPE_CHECKING:
    from delivery.signer import SignerProcess

# Headers signed when present (RFC 6376 §5.4.1 recommendations plus the RFC 8058 pair);
# From, Subject, Date, To, Message-ID and the List-Unsubscribe pair are also signed once
# more than they occur ("oversigned") so nobody can add a second copy after signing.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"in-reply-to",
    b"references",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
)
OVERSIGNED: frozenset[bytes] = frozenset(
    {
        b"from",
        b"subject",
        b"date",
        b"to",
        b"message-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
    }
)
# relaxed headers (survive re-folding by relays), simple body: dkimpy's own default, and
# cheaper than relaxed body canonicalisation (a regex pass over every body line).
CANONICALIZATION = (b"relaxed", b"simple")
HEADER_NAME = b"DKIM-Signature"


class DkimKeyError(RouteError):
    """A DKIM key that cannot be used (unreadable, not RSA >= 1024 bits or Ed25519)."""


@dataclass(frozen=True)
class DkimKey:
    """A parsed private key for one (domain, selector)."""

    domain: str
    selector: str
    algorithm: str  # rsa-sha256, ed25519-sha256
    sign_digest: Callable[[bytes], bytes]
    public_txt: str  # the p= value of the DNS record
    der: bytes = field(default=b"", repr=False)  # PKCS#8 DER, for the signer process

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes) -> DkimKey:
        return cls._load(domain, selector, pem, serialization.load_pem_private_key)

    @classmethod
    def from_der(cls, domain: str, selector: str, der: bytes) -> DkimKey:
        """The key as :attr:`der` carries it (to the signer process)."""
        return cls._load(domain, selector, der, serialization.load_der_private_key)

    @classmethod
    def _load(cls, domain: str, selector: str, data: bytes, loader: Any) -> DkimKey:
        try:
            key = loader(data, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(f"DKIM key for {selector}._domainkey.{domain}: {exc}") from None
        return cls.from_key(domain, selector, key)

    @classmethod
    def from_key(cls, domain: str, selector: str, key: Any) -> DkimKey:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise DkimKeyError(f"DKIM RSA key for {domain} is {key.key_size} bits (< 1024)")
            pub = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            pss = padding.PKCS1v15()
            prehashed = Prehashed(hashes.SHA256())

            def sign_rsa(digest: bytes) -> bytes:
                return key.sign(digest, pss, prehashed)

            return cls(
                domain.lower(),
                selector,
                "rsa-sha256",
                sign_rsa,
                base64.b64encode(pub).decode(),
                der,
            )
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return cls(
                domain.lower(),
                selector,
                "ed25519-sha256",
                key.sign,
                base64.b64encode(raw).decode(),
                der,
            )
        raise DkimKeyError(
            f"DKIM key for {domain} must be RSA or Ed25519, not {type(key).__name__}"
        )

    def dns_record(self) -> bytes:
        """The TXT record value to publish at ``<selector>._domainkey.<domain>``."""
        k = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={k}; p={self.public_txt}".encode()


def signed_header_list(present: Sequence[bytes]) -> list[bytes]:
    names = [n.lower() for n in present]
    chosen = [n for n in names if n in SIGNED_HEADERS]
    extra = [n for n in dict.fromkeys(chosen) if n in OVERSIGNED]
    return chosen + extra


_POLICY = Canonicalization(*CANONICALIZATION)
_C_VALUE = _POLICY.c_value
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def split_headers(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(headers, body) of a CRLF message, as ``dkim.rfc822_parse`` gives them.

    Only the header block is split into lines (dkimpy's parser splits the whole message
    with a regex, body included, which cost more than the rest of the signing): each
    header is (name, value) with the value as written after the colon, continuation lines
    included, each line ending CRLF. The body is everything after the blank line.
    """
    end = message.find(b"\r\n\r\n")
    if end < 0:
        block, body = message, b""
        if block.endswith(b"\r\n"):
            block = block[:-2]
    else:
        block, body = message[:end], message[end + 4 :]
    headers: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + line + b"\r\n")
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or not _is_field_name(name):
            raise DkimKeyError(f"cannot DKIM-sign: malformed header line {line[:80]!r}")
        headers.append((name, value + b"\r\n"))
    return headers, body


def _is_field_name(name: bytes) -> bool:
    """Printable US-ASCII except the colon (RFC 5322 2.2), by regex: a per-byte generator
    was a tenth of the signer's Python time."""
    return _FIELD_NAME.fullmatch(name) is not None


def sign_message(message: bytes, keys: Sequence[DkimKey], *, now: float | None = None) -> bytes:
    """``message`` (CRLF line ends) with one DKIM-Signature header per key prepended.

    dkimpy's canonicalisation and folding decide the signed bytes (see the module text);
    only the header block is split here, and only the headers named in ``h=`` are
    canonicalised (the selection picks among those anyway).
    """
    return signature_headers(message, keys, now=now) + message


def signature_headers(
    message: bytes, keys: Sequence[DkimKey], *, now: float | None = None
) -> bytes:
    """The DKIM-Signature header lines :func:`sign_message` prepends."""
    pending = _prepare(message, keys, now)
    return _assemble([(p, p.key.sign_digest(p.digest)) for p in pending])


async def sign_message_offloaded(
    message: bytes,
    keys: Sequence[DkimKey],
    signer: SignerProcess | None,
    *,
    now: float | None = None,
) -> bytes:
    """:func:`sign_message`, done by ``signer``'s process when given.

    Canonicalisation (~0.05 ms of pure Python per message) and an RSA-2048 signature
    (~0.26 ms) were the largest CPU costs of a send on the event loop; the signer process
    does both on the other core (see :mod:`delivery.signer` for why not a thread).
    """
    if signer is None:
        return sign_message(message, keys, now=now)
    stamp = now if now is not None else time.time()
    return await signer.sign(keys, message, stamp) + message


@dataclass
class _Pending:
    """One signature to make: its tag list (``b=`` still a placeholder) and header hash."""

    key: DkimKey
    fields: list[tuple[bytes, bytes]]
    digest: bytes


# dkimpy signs with this b= value first, so that b= is folded onto a line of its own and the
# real signature, put in later, refolds nothing before it; then it strips the value (with
# dkim.RE_BTAG, a regex pass over the whole header: ~9 us) to hash the header. The
# placeholder occurs once, whole (fold breaks lines at spaces only, and it has none), so a
# bytes replace strips the same bytes.
_B_PLACEHOLDER = b"0" * 60


def _prepare(message: bytes, keys: Sequence[DkimKey], now: float | None) -> list[_Pending]:
    headers, body = split_headers(message)
    include = signed_header_list([name for name, _ in headers])
    if b"from" not in include:
        raise DkimKeyError("a message without a From header cannot be DKIM-signed")
    wanted = frozenset(include)
    bodyhash = base64.b64encode(hashlib.sha256(_POLICY.body(body)).digest())
    cheaders = _POLICY.headers([h for h in headers if h[0].lower() in wanted])
    signed = _select_headers(cheaders, include)
    stamp = str(int(now if now is not None else time.time())).encode()
    out: list[_Pending] = []
    for key in keys:
        fields = [
            (b"v", b"1"),
            (b"a", key.algorithm.encode()),
            (b"c", _C_VALUE),
            (b"d", key.domain.encode()),
            (b"i", b"@" + key.domain.encode()),
            (b"q", b"dns/txt"),
            (b"s", key.selector.encode()),
            (b"t", stamp),
            (b"h", b" : ".join(include)),
            (b"bh", bodyhash),
            (b"b", _B_PLACEHOLDER),
        ]
        value = fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(HEADER_NAME))
        value = value.replace(b"b=" + _B_PLACEHOLDER, b"b=", 1)
        hasher = hashlib.sha256()
        # As dkim.hash_headers: the signed headers, then this header canonicalised, without
        # its b= value and without a trailing CRLF.
        ((sig_name, sig_value),) = _POLICY.headers([(HEADER_NAME, b" " + value)])
        for name, text in (*signed, (sig_name, sig_value.rstrip())):
            hasher.update(name)
            hasher.update(b":")
            hasher.update(text)
        out.append(_Pending(key, fields, hasher.digest()))
    return out


def _select_headers(
    cheaders: Sequence[tuple[bytes, bytes]], include: Sequence[bytes]
) -> list[tuple[bytes, bytes]]:
    """``dkim.select_headers``: for each name in ``include``, the last instance not yet
    taken, searching upwards (so a name listed twice takes the last two instances, and a
    name listed more often than it occurs signs its absence). ``cheaders`` are relaxed-
    canonicalised, so their names are lower case already: dkimpy lowercases every name
    again for every name it looks for (~120 calls a message)."""
    chosen: list[tuple[bytes, bytes]] = []
    last: dict[bytes, int] = {}
    for name in include:
        i = last.get(name, len(cheaders))
        while i > 0:
            i -= 1
            if cheaders[i][0] == name:
                chosen.append(cheaders[i])
                break
        last[name] = i
    return chosen


def _assemble(signed: Sequence[tuple[_Pending, bytes]]) -> bytes:
    out: list[bytes] = []
    for pending, signature in signed:
        fields = [*pending.fields[:-1], (b"b", base64.b64encode(signature))]
        value = fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", namelen=len(HEADER_NAME))
        out.append(HEADER_NAME + b": " + value)
    return b"".join(out)
