"""The RSA signer process: framing, signatures that verify, a child killed mid-batch
(its signatures fail with SignerError, the next one starts a new child), clean close."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from delivery.errors import SignerError
from delivery.signer import SignerProcess, frame, key_frame, parse_results, serve, sign_frame


def rsa_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, der


def verifies(key: rsa.RSAPrivateKey, digest: bytes, signature: bytes) -> bool:
    key.public_key().verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return True


def test_serve_answers_in_order_and_names_unknown_keys() -> None:
    """The child's loop signs a batch in order; a digest for an unregistered key is an
    error entry, not a crash; input ending ends it."""
    key, der = rsa_key()
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    inp = io.BytesIO(
        key_frame(7, der) + sign_frame([(7, digests[0]), (9, digests[1]), (7, digests[2])])
    )
    out = io.BytesIO()
    serve(inp, out)
    data = out.getvalue()
    body = data[4:]
    assert int.from_bytes(data[:4], "big") == len(body)
    results = parse_results(body)
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1] == b"unknown key 9"
    assert verifies(key, digests[0], results[0][1]) and verifies(key, digests[2], results[2][1])


def test_parse_results_refuses_a_foreign_frame() -> None:
    """Anything but an R frame is a SignerError."""
    with pytest.raises(SignerError):
        parse_results(frame(b"X")[4:])


async def test_signatures_from_the_process_verify() -> None:
    """500 concurrent signatures over two keys, batched, each verifies with its key."""
    signer = SignerProcess()
    keys = [rsa_key(), rsa_key()]
    try:
        digests = [hashlib.sha256(str(i).encode()).digest() for i in range(500)]
        signatures = await asyncio.gather(
            *(signer.sign(keys[i % 2][1], d) for i, d in enumerate(digests))
        )
        assert all(
            verifies(keys[i % 2][0], d, s)
            for i, (d, s) in enumerate(zip(digests, signatures, strict=True))
        )
        assert signer.starts == 1
    finally:
        await signer.aclose()


async def test_killed_child_fails_its_signatures_and_restarts() -> None:
    """SIGKILL of the child: what it held fails with SignerError, the next signature
    starts a new child and verifies."""
    signer = SignerProcess()
    key, der = rsa_key()
    digest = hashlib.sha256(b"x").digest()
    try:
        await signer.sign(der, digest)
        proc = signer._proc
        assert proc is not None
        held = [asyncio.ensure_future(signer.sign(der, digest)) for _ in range(200)]
        await asyncio.sleep(0)
        os.kill(proc.pid, signal.SIGKILL)
        results = await asyncio.gather(*held, return_exceptions=True)
        failed = [r for r in results if isinstance(r, SignerError)]
        assert failed, "the kill landed after every signature was made"
        assert all(isinstance(r, (bytes, SignerError)) for r in results)
        assert verifies(key, digest, await signer.sign(der, digest))
        assert signer.starts == 2
    finally:
        await signer.aclose()


async def test_close_ends_the_child_and_refuses_more() -> None:
    """aclose() ends the child process; a later signature is refused, not hung."""
    signer = SignerProcess()
    _, der = rsa_key()
    await signer.sign(der, hashlib.sha256(b"x").digest())
    proc = signer._proc
    assert proc is not None
    await signer.aclose()
    assert proc.returncode is not None
    with pytest.raises(SignerError, match="closed"):
        await signer.sign(der, hashlib.sha256(b"y").digest())
