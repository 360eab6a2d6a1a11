"""Warmup's exception tree::

WarmupError                 base
├── ConfigError             a bad CLI value or an unknown account (one line: what + fix)
└── ImapError               the receiver's IMAP session failed
    ├── ImapTemporary       connection lost, timeout, NO/BAD to a command: retried
    └── ImapAuthFailed      the login was refused: the step fails permanently
"""

from __future__ import annotations


class WarmupError(Exception):
    """Base of warmup's errors."""


class ConfigError(WarmupError):
    """A value or account the warmup commands cannot use."""


class ImapError(WarmupError):
    """An IMAP session of a warmup step failed."""


class ImapTemporary(ImapError):
    """A failure worth retrying (network, timeout, a command refused)."""


class ImapAuthFailed(ImapError):
    """The server refused the login."""
