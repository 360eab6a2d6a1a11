"""Failures a user can cause and fix, reported by the CLI as one line.

Every exception here renders as ``<what> (<how to fix>)``; ``mailgate`` prints it as
``mailgate: <what> (<how to fix>)`` and exits with :attr:`UserFacingError.exit_code`. A
traceback is shown only with ``--debug``, or for any other exception (a real bug)::

    UserFacingError
    ├── SettingsError        (gateway.settings) a setting has a bad value; exit 2
    ├── EmbeddedError        (gateway.embedded) an embedded server cannot start
    ├── BackendUnavailable   PostgreSQL or Redis cannot be reached or refused the login
    └── CliError             a command's own arguments or inputs are wrong
"""

from __future__ import annotations


class UserFacingError(Exception):
    """Base: ``str()`` is one line that says what went wrong and how to fix it."""

    exit_code = 1


class BackendUnavailable(UserFacingError):
    """PostgreSQL or Redis cannot be reached, or refused mailgate's login."""


class CliError(UserFacingError):
    """A command was given something it cannot use (a missing file, a bad payload, ...)."""

    def __init__(self, message: str, *, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
