"""Where and as whom to log in to a mailbox over IMAP: one type for ingest's watchers and
warmup's receivers (both read it from an account row), so the password's hiding and the
Dovecot master-user login name are written once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """Where and how to log in. ``password`` is never logged or shown in ``repr``."""

    host: str
    port: int
    security: str  # tls / starttls / none
    username: str
    password: str
    master_user: str | None = None

    @property
    def login_name(self) -> str:
        """``user*master`` for a Dovecot master-user login, else the user name."""
        return f"{self.username}*{self.master_user}" if self.master_user else self.username

    def __repr__(self) -> str:
        return (
            f"Endpoint({self.host}:{self.port}, {self.security}, {self.login_name!r}, "
            "password=********)"
        )
