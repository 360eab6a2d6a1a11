"""The seams where mailgate reaches into a library's internals, one module per library.

Each module names the versions it was written for and refuses to import on any other
(:func:`require`), so an upgrade fails loudly at start instead of misbehaving quietly; a
contract test (``tests/gateway/test_compat.py``) checks that every internal it touches is
still there. An override lives here only while a benchmark in ``bench/README.md`` shows it
is worth >= 10 % (or it fixes a failure the library has); everything else in mailgate uses
the libraries' public APIs.
"""

from __future__ import annotations

from importlib.metadata import version


class CompatError(ImportError):
    """An installed library is a version a seam was not written for."""


def require(distribution: str, supported: tuple[str, ...]) -> str:
    """The installed version of ``distribution``; :class:`CompatError` unless it starts
    with one of ``supported`` (e.g. ``"2.0."``)."""
    installed = version(distribution)
    if not installed.startswith(supported):
        raise CompatError(
            f"{distribution} {installed} is installed, but mailgate's override of its "
            f"internals (gateway/compat) was written for {', '.join(supported)}x: install "
            "from the lock file (make venv), or check the seam against this version and add it"
        )
    return installed
