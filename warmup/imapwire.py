"""The IMAP the warmup steps speak, as pure functions: quoting, and parsing the few
responses they read (CAPABILITY, LIST with SPECIAL-USE flags, UID SEARCH, COPYUID).

Which folder is Junk: the one LIST marks ``\\Junk`` (RFC 6154), else the first of the
common names (Junk, Spam, "Junk E-mail", [Gmail]/Spam, "Junk Email", Bulk Mail),
compared without case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

JUNK_NAMES = ("Junk", "Spam", "Junk E-mail", "[Gmail]/Spam", "Junk Email", "Bulk Mail")
_LIST = re.compile(rb'^\* LIST \(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.*)$', re.I)


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501): backslash and double quote escaped; CR/LF refused."""
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError("IMAP strings cannot carry CR, LF or NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


@dataclass(frozen=True)
class Folder:
    """One LIST entry: its name and flags (``\\Junk``, ``\\Noselect``...)."""

    name: str
    flags: frozenset[str]


def parse_list(lines: Iterable[bytes]) -> list[Folder]:
    """The folders of untagged LIST lines (a literal name already joined into the line)."""
    out = []
    for line in lines:
        m = _LIST.match(line.rstrip(b"\r\n"))
        if m is None:
            continue
        flags = frozenset(f.lower() for f in m.group(1).decode("ascii", "replace").split())
        out.append(Folder(_unquote(m.group(3)), flags))
    return out


def junk_folder(folders: Iterable[Folder]) -> str | None:
    """The Junk folder: SPECIAL-USE ``\\Junk`` first, else a common name."""
    listed = [f for f in folders if "\\noselect" not in f.flags]
    for f in listed:
        if "\\junk" in f.flags:
            return f.name
    by_name = {f.name.lower(): f.name for f in listed}
    for name in JUNK_NAMES:
        if name.lower() in by_name:
            return by_name[name.lower()]
    return None


def parse_search(lines: Iterable[bytes]) -> list[int]:
    """UIDs of untagged ``* SEARCH`` lines."""
    uids: list[int] = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == b"*" and parts[1].upper() == b"SEARCH":
            uids.extend(int(p) for p in parts[2:] if p.isdigit())
    return uids


def parse_capabilities(lines: Iterable[bytes]) -> frozenset[str]:
    """Capabilities named by ``* CAPABILITY`` lines or an ``[CAPABILITY ...]`` code."""
    caps: set[str] = set()
    for line in lines:
        text = line.decode("ascii", "replace")
        m = re.search(r"\[CAPABILITY ([^\]]*)\]", text, re.I)
        if m:
            caps.update(m.group(1).upper().split())
        elif text.upper().startswith("* CAPABILITY "):
            caps.update(text[13:].upper().split())
    return frozenset(caps)


def literal_size(line: bytes) -> int | None:
    """The size of the literal a response line announces (``...{123}``), else None."""
    m = re.search(rb"\{(\d{1,9})\+?\}\r?\n?$", line)
    return int(m.group(1)) if m else None
