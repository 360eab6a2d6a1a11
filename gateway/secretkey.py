"""The process secret: VERP token HMACs and encryption of credentials at rest.

The key comes from ``secret_key``, else ``secret_key_file``, else a file generated on first
use in the data directory (``data_dir/secret.key``, mode 0600) and reused afterwards; the log
says when a key is generated and where, never the key itself.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from gateway.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"


class SecretKeyError(Exception):
    """The configured key file cannot be read or is too short."""


def load_secret_key(settings: Settings) -> bytes:
    """Return the secret key bytes, generating and keeping one if none is configured."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.secret_key_file or settings.data_dir / KEY_FILE_NAME
    if path.exists():
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise SecretKeyError(f"secret key file {path} holds fewer than 32 bytes")
        return key
    if settings.secret_key_file is not None:
        raise SecretKeyError(f"secret_key_file {path} does not exist")
    return _generate(path)


def _generate(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    try:
        # Two processes racing on first start: the first link wins, both use its key.
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("generated a new secret key", extra={"key_file": str(path)})
    return key


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte subkey for one purpose, so VERP HMACs and encryption never share a key."""
    return hashlib.blake2b(secret, key=purpose.encode(), digest_size=32).digest()


class CredentialBox:
    """Encrypts credentials (IMAP/SMTP passwords, DKIM keys) for storage at rest (Fernet)."""

    def __init__(self, secret: bytes):
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret, "credentials")))

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def open(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretKeyError(
                "stored credential cannot be decrypted: was the secret key changed?"
            ) from None
