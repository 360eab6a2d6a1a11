"""SMTP reply codes and RFC 3463 enhanced status codes found in free text."""

from __future__ import annotations

import re

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY = re.compile(r"(?<![\d.#-])([245][0-5]\d)(?:[ -]|$)")
_ADDR = re.compile(r"[\w.+'=/-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)


def find_status(text: str) -> str:
    """The most telling enhanced status code in ``text`` ("" if none).

    A specific code (``5.1.1``) is preferred over a generic ``X.0.0`` appearing earlier, which is
    how MTAs quote a remote reply inside their own generic wrapper.
    """
    best = ""
    for match in _STATUS.finditer(text):
        code = match.group(0)
        if not best:
            best = code
        if not code.endswith(".0.0") and best.endswith(".0.0"):
            best = code
            break
        if not best.endswith(".0.0"):
            break
    return best


def find_reply_code(text: str) -> int | None:
    """The first three-digit SMTP reply code at a word boundary in ``text`` (None if none)."""
    for match in _REPLY.finditer(_ADDR.sub(" ", text)):
        return int(match.group(1))
    return None


def normalise_status(value: str) -> str:
    """Extract ``d.d.d`` from a Status field value such as ``5.1.1 (user unknown)``."""
    match = _STATUS.search(value)
    return match.group(0) if match else ""
