"""The DKIM signer process: framing, whole-message signing that dkimpy verifies (RSA and
Ed25519), a child killed mid-batch (its signatures fail with SignerError, the next one
starts a new child), a message that cannot be signed, clean close."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from delivery.dkimsign import DkimKey, DkimKeyError, sign_message_offloaded, signature_headers
from delivery.errors import SignerError
from delivery.signer import (
    SignerProcess,
    frame,
    key_frame,
    parse_key_frame,
    parse_results,
    parse_sign_frame,
    serve,
    sign_frame,
)

DOMAIN = "sender.test"


def keys() -> list[DkimKey]:
    return [
        DkimKey.from_key(
            DOMAIN, "rsa1", rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        DkimKey.from_key(DOMAIN, "ed1", ed25519.Ed25519PrivateKey.generate()),
    ]


def message(n: int) -> bytes:
    return (
        f"From: ops@{DOMAIN}\r\nTo: r{n}@example.org\r\nSubject: hello {n}\r\n"
        f"Message-ID: <{n}@{DOMAIN}>\r\n\r\nbody {n}\r\n.dot line\r\n"
    ).encode()


def verified(signed: bytes, used: list[DkimKey]) -> bool:
    dns = {f"{k.selector}._domainkey.{DOMAIN}.".encode(): k.dns_record() for k in used}
    d = dkim.DKIM(signed)
    return all(
        d.verify(idx=i, dnsfunc=lambda name, timeout=5: dns.get(name)) for i in range(len(used))
    )


def test_frames_round_trip() -> None:
    """Key and sign frames parse back to what was framed."""
    body = key_frame(3, "d.example", "sel", b"\x00der")[4:]
    assert parse_key_frame(body) == (3, "d.example", "sel", b"\x00der")
    requests = [([1, 2], 1_700_000_000.5, b"m1"), ([7], 1.0, b"")]
    assert parse_sign_frame(sign_frame(requests)[4:]) == requests
    with pytest.raises(SignerError):
        parse_results(frame(b"X")[4:])


def test_serve_signs_like_the_loop_and_names_bad_input() -> None:
    """The child's loop returns the same header lines as signing on the loop; an unknown key
    is a temporary error entry, a message without From a permanent one; input ending ends it."""
    ks = keys()
    inp = io.BytesIO(
        b"".join(key_frame(i + 1, k.domain, k.selector, k.der) for i, k in enumerate(ks))
        + sign_frame(
            [([1, 2], 1000.0, message(1)), ([9], 1000.0, message(2)), ([1], 1.0, b"X: y\r\n\r\n")]
        )
    )
    out = io.BytesIO()
    serve(inp, out)
    results = parse_results(out.getvalue()[4:])
    assert [status for status, _ in results] == [0, 1, 2]
    # RSA PKCS#1 v1.5 and Ed25519 are deterministic: the same bytes as on the loop.
    assert results[0][1] == signature_headers(message(1), ks, now=1000.0)
    assert verified(results[0][1] + message(1), ks)


async def test_signatures_from_the_process_verify() -> None:
    """300 concurrent messages signed with an RSA and an Ed25519 key, batched: dkimpy
    verifies every signature."""
    signer = SignerProcess()
    ks = keys()
    try:
        signed = await asyncio.gather(
            *(sign_message_offloaded(message(i), ks, signer, now=1_700_000_000) for i in range(300))
        )
        assert all(verified(m, ks) for m in signed)
        assert signer.starts == 1
        with pytest.raises(DkimKeyError):
            await signer.sign(ks, b"X: no from\r\n\r\nbody\r\n", 1.0)
    finally:
        await signer.aclose()


async def test_killed_child_fails_its_signatures_and_restarts() -> None:
    """SIGKILL of the child: what it held fails with SignerError, the next signature
    starts a new child and verifies."""
    signer = SignerProcess()
    ks = keys()[:1]
    try:
        await signer.sign(ks, message(0), 1.0)
        proc = signer._proc
        assert proc is not None
        held = [asyncio.ensure_future(signer.sign(ks, message(i), 1.0)) for i in range(200)]
        await asyncio.sleep(0)
        os.kill(proc.pid, signal.SIGKILL)
        results = await asyncio.gather(*held, return_exceptions=True)
        assert any(isinstance(r, SignerError) for r in results), "the kill landed too late"
        assert all(isinstance(r, (bytes, SignerError)) for r in results)
        assert verified(await signer.sign(ks, message(1), 1.0) + message(1), ks)
        assert signer.starts == 2
    finally:
        await signer.aclose()


async def test_close_ends_the_child_and_refuses_more() -> None:
    """aclose() ends the child process; a later signature is refused, not hung."""
    signer = SignerProcess()
    ks = keys()[:1]
    await signer.sign(ks, message(0), 1.0)
    proc = signer._proc
    assert proc is not None
    await signer.aclose()
    assert proc.returncode is not None
    with pytest.raises(SignerError, match="closed"):
        await signer.sign(ks, message(1), 1.0)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["-c", "import sys; sys.exit(3)"], "it exited during start-up"),
        (["-c", "import sys; sys.stdout.write('\\0\\0\\0\\2hi'); sys.stdout.flush()"], "hi"),
        (["-c", "import time; time.sleep(30)"], "no answer within 3 s"),
    ],
)
async def test_a_child_that_cannot_start_is_a_clear_error(argv: list[str], said: str) -> None:
    """The start ends with the child's hello; no hello is a SignerError naming why, the
    child is gone, and the next signature tries again."""
    ks = keys()
    signer = SignerProcess(argv=[sys.executable, *argv], start_timeout_s=3)
    with pytest.raises(SignerError, match=f"cannot start the DKIM signer: .*{said}"):
        await signer.sign(ks, message(1), 1000.0)
    assert signer.starts == 0 and signer._proc is None
    signer.argv = SignerProcess().argv
    assert verified(await signer.sign(ks, message(2), 1000.0) + message(2), ks)
    await signer.aclose()
