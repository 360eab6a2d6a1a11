"""SMTP reply codes and RFC 3463 enhanced status codes found in free text, and which to report.

A report often carries several codes: the DSN's ``Status:`` field (frequently a generic
``5.0.0`` the reporting MTA made up), the code the remote server quoted in its reply (the
specific one: ``4.2.2``, ``5.7.1``), and codes of earlier attempts. :func:`prefer` picks the one
to report the way Sisimai's ``SMTP::Status->prefer`` does: the code whose class agrees with the
reply code, else the specific code over the generic, else the field.
"""

from __future__ import annotations

import re

#: ``d.d.d`` not inside a longer dotted number or a version string (``v2.1.5``), not an IPv4
#: address part.
_STATUS = re.compile(r"(?<![\d./vV])([245])\.([0-7])\.(\d{1,3})(?!\d)")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
#: Three-digit reply codes Sisimai accepts, most telling first (5xx, then 4xx, then 2xx).
_REPLY_ORDER = (
    "550", "552", "553", "551", "521", "525", "523", "524", "530", "533", "534", "535", "538",
    "555", "556", "554", "500", "501", "502", "503", "504", "421", "450", "451", "452", "422",
    "430", "432", "453", "454", "455", "458", "459", "211", "214", "220", "221", "235", "250",
    "251", "252", "253", "334", "354"
)
_REPLY_RANK = {code: rank for rank, code in enumerate(_REPLY_ORDER)}
_REPLY = re.compile(r"(?<![\d./])([2-5]\d\d)(?![\d./])")
_ADDR = re.compile(r"[\w.+'=/-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)


def find_status(text: str, reply_class: str = "") -> str:
    """The most telling enhanced status code in ``text`` ("" if none).

    Codes of the given class only when ``reply_class`` is ``"2"``, ``"4"`` or ``"5"``. Generic
    codes (``X.0.0``) and the ambiguous ``4.4.7`` count only when nothing more specific appears.
    """
    if len(text) < 5 or "." not in text:
        return ""
    if _IPV4.search(text):
        text = _IPV4.sub(" ", text)
    chosen = ""
    fallback = ""
    for match in _STATUS.finditer(text):
        code = match.group(0)
        if reply_class in ("2", "4", "5") and code[0] != reply_class:
            continue
        if code.endswith(".0.0") or code == "4.4.7":
            fallback = fallback or code
            continue
        chosen = prefer(chosen, code) if chosen else code
    if fallback:
        chosen = prefer(chosen, fallback) if chosen else fallback
    return chosen


def find_reply(text: str, status: str = "") -> str:
    """The SMTP reply code in ``text`` ("" if none), of the status code's class when given."""
    if len(text) < 3 or "x-unix" in text.lower():
        return ""
    wanted = status[:1] if status[:1] in ("2", "4", "5") else ""
    best = ""
    for match in _REPLY.finditer(_ADDR.sub(" ", text) if "@" in text else text):
        code = match.group(1)
        if code not in _REPLY_RANK or (wanted and code[0] != wanted):
            continue
        if not best or _REPLY_RANK[code] < _REPLY_RANK[best]:
            best = code
    return best


def find_reply_code(text: str) -> int | None:
    """The first SMTP reply code in ``text`` as an integer (None if none)."""
    code = find_reply(text)
    return int(code) if code else None


def normalise_status(value: str) -> str:
    """Extract ``d.d.d`` from a Status field value such as ``5.1.1 (user unknown)``."""
    match = _STATUS.search(value)
    return match.group(0) if match else ""


def prefer(field: str, in_text: str, reply: str = "") -> str:
    """Choose between the ``Status:`` field and a code found in the text (Sisimai's rule)."""
    if not field:
        return in_text
    if not in_text:
        return field
    if len(field) < 5:
        return in_text
    if len(in_text) < 5:
        return field
    if reply and field[0] != in_text[0]:
        if reply[0] == field[0]:
            return field
        if reply[0] == in_text[0]:
            return in_text
    if field == in_text:
        return field
    if field.endswith(".0.0"):
        return field if in_text.endswith(".0.0") else in_text
    if ".0" in field and ".0" not in in_text:
        return in_text  # the field is X.Y.0 or X.0.Z, the text names the detail
    if in_text.endswith(".0.0"):
        return field
    if field in ("4.4.7", "4.7.0") or field.startswith("5.3.") or field[1:4] in (
            ".5.1", ".5.2", ".5.4", ".5.5"):
        return in_text  # ambiguous or protocol-level field codes: the text is more precise
    if field == "5.1.1":
        return field if ".0" in in_text or in_text.startswith("5.5.") else in_text
    if field == "5.1.3" and in_text.startswith("5.7."):
        return in_text
    return field
