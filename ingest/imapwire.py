"""Reading aioimaplib's answers: SELECT data, FETCH items, LIST names, IDLE pushes. Pure.

aioimaplib hands back lines (``bytes``) with the ``* `` stripped and literals as separate
``bytearray`` items, e.g. for ``UID FETCH``::

    [b'1 FETCH (UID 7 RFC822.SIZE 42 INTERNALDATE "25-Nov-2026 10:00:00 +0000" BODY[] {42}',
     bytearray(b'...42 bytes...'), b')', b'Fetch completed (0.001 + 0.000 secs).']

These functions turn them into values; a line they cannot read is skipped (a server may send
unsolicited FETCH FLAGS or EXPUNGE in between), never an exception.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.I)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.I)
_HIGHESTMODSEQ = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]", re.I)
_EXISTS = re.compile(rb"^(\d+) EXISTS", re.I)
_FETCH_START = re.compile(rb"^(\d+) FETCH \(", re.I)
_UID = re.compile(rb"\bUID (\d+)", re.I)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.I)
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.I)
_LIST = re.compile(rb'^(?:LIST )?\(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.+)$', re.I)


@dataclass(frozen=True)
class SelectInfo:
    """What SELECT told about a folder."""

    uidvalidity: int
    uidnext: int | None
    exists: int
    highest_modseq: int | None


@dataclass(frozen=True)
class FetchedItem:
    """One message of a FETCH answer (``body`` is None when not asked for)."""

    uid: int
    size: int | None
    internal_date: dt.datetime | None
    body: bytes | None


def _line_bytes(line: bytes | bytearray | str) -> bytes:
    return line.encode() if isinstance(line, str) else bytes(line)


def parse_select(lines: list[bytes]) -> SelectInfo | None:
    """UIDVALIDITY, UIDNEXT, EXISTS and HIGHESTMODSEQ from a SELECT answer (None: none)."""
    uidvalidity = uidnext = modseq = None
    exists = 0
    for raw in lines:
        line = _line_bytes(raw)
        if m := _UIDVALIDITY.search(line):
            uidvalidity = int(m.group(1))
        if m := _UIDNEXT.search(line):
            uidnext = int(m.group(1))
        if m := _HIGHESTMODSEQ.search(line):
            modseq = int(m.group(1))
        if m := _EXISTS.match(line):
            exists = int(m.group(1))
    if uidvalidity is None:
        return None
    return SelectInfo(uidvalidity, uidnext, exists, modseq)


def exists_counts(lines: list[bytes]) -> list[int]:
    """The EXISTS counts in an IDLE push (``[b'3 EXISTS', b'1 RECENT']`` -> ``[3]``)."""
    out = []
    for raw in lines:
        if isinstance(raw, bytes | bytearray | str) and (m := _EXISTS.match(_line_bytes(raw))):
            out.append(int(m.group(1)))
    return out


def parse_internaldate(text: bytes) -> dt.datetime | None:
    """``25-Nov-2026 10:00:00 +0000`` -> an aware datetime (None when unreadable)."""
    try:
        return dt.datetime.strptime(text.decode().strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def parse_fetch(lines: list[bytes | bytearray]) -> list[FetchedItem]:
    """Every message of a FETCH answer that carries a UID, in the order received."""
    items: list[FetchedItem] = []
    meta = b""
    body: bytes | None = None
    open_item = False

    def close() -> None:
        uid = _UID.search(meta)
        if uid is None:
            return
        size = _SIZE.search(meta)
        date = _DATE.search(meta)
        items.append(
            FetchedItem(
                uid=int(uid.group(1)),
                size=int(size.group(1)) if size else None,
                internal_date=parse_internaldate(date.group(1)) if date else None,
                body=body,
            )
        )

    for raw in lines:
        if isinstance(raw, bytearray):
            if open_item:
                body = bytes(raw)
            continue
        line = _line_bytes(raw)
        if _FETCH_START.match(line):
            if open_item:
                close()
            meta, body, open_item = line, None, True
            if not line.endswith(b"}") and line.rstrip().endswith(b")"):
                close()
                open_item = False
        elif open_item:
            meta += b" " + line
            if line.rstrip().endswith(b")"):
                close()
                open_item = False
    if open_item:
        close()
    return items


def parse_list(lines: list[bytes]) -> list[str]:
    """Folder names from a LIST answer (quoted names unquoted)."""
    names = []
    for raw in lines:
        m = _LIST.match(_line_bytes(raw))
        if not m:
            continue
        name = m.group(3).strip()
        if name.startswith(b'"') and name.endswith(b'"'):
            name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        names.append(name.decode("utf-8", "replace"))
    return names


def uid_set(uids: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``1:3,7,9:10`` (compact ranges for UID FETCH)."""
    ranges: list[str] = []
    for uid in sorted(set(uids)):
        if ranges and uid == _last(ranges) + 1:
            start = ranges[-1].split(":")[0]
            ranges[-1] = f"{start}:{uid}"
        else:
            ranges.append(str(uid))
    return ",".join(ranges)


def _last(ranges: list[str]) -> int:
    return int(ranges[-1].split(":")[-1])
