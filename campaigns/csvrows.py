"""CSV of contacts → validated rows, in batches, from a source of byte chunks (pure: no I/O
of its own, so the importer can run it in a thread and tests can feed it bytes).

The file is read as UTF-8 (a BOM is dropped) through an incremental decoder, split into
lines and handed to :mod:`csv`; at no point is more than one chunk and one batch in memory.
The mapping names a column per field (``{"col_0": "email", "col_1": "name"}``, or header
names when the file has a header); ``email`` and ``name`` are contact columns, every other
field goes into ``contacts.fields``. Addresses are normalised (trimmed, ``<>`` dropped,
lower-cased) and checked with flanker's address parser; a fast pattern admits the common
shape first (:func:`valid_address`), which flanker accepts too (a property test says so).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from campaigns import ImportFileError
from gateway import flankerlib

MAX_INVALID_KEPT: Final = 100
MAX_ADDRESS_LEN: Final = 254

_COL = re.compile(r"^col_(\d+)$")
# A plain dot-atom address on a host name with a letter TLD: most of any real list.
_FAST = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def normalise_address(value: str) -> str:
    """Trimmed, without surrounding ``<>``, lower-cased (contacts and suppressions compare
    addresses lower-cased)."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text.lower()


def valid_address(address: str) -> bool:
    """True when ``address`` (normalised) is a syntactically valid addr-spec."""
    if not address or len(address) > MAX_ADDRESS_LEN:
        return False
    local, _, _ = address.rpartition("@")
    if len(local) > 64:
        return False
    if _FAST.match(address):
        return True
    return flankerlib.address().parse(address, addr_spec_only=True) is not None


@dataclass(frozen=True)
class Row:
    """One valid row: its line number (1-based, physical), address, name and extra fields
    as JSON text (what COPY sends)."""

    line: int
    email: str
    name: str | None
    fields: str


@dataclass(frozen=True)
class Invalid:
    line: int
    reason: str
    value: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "reason": self.reason, "value": self.value[:200]}


@dataclass
class Batch:
    """Up to ``size`` data rows: the valid ones and the invalid ones (all of them; the
    importer keeps the first 100). ``rows`` counts both."""

    rows: int = 0
    valid: list[Row] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)


@dataclass(frozen=True)
class Mapping:
    """Column index per field, resolved against the header (or the first row's width)."""

    email: int
    name: int | None
    extra: tuple[tuple[str, int], ...]
    width: int


def resolve_mapping(mapping: dict[str, str], header: list[str] | None, first_width: int) -> Mapping:
    """Column indexes for ``mapping``; :class:`ImportFileError` when a key names a column
    the file does not have."""
    positions: dict[str, int] = {}
    named = {h.strip(): i for i, h in enumerate(header)} if header is not None else {}
    width = len(header) if header is not None else first_width
    for key, target in mapping.items():
        match = _COL.match(key.strip())
        if header is not None and key.strip() in named:
            index = named[key.strip()]
        elif match:
            index = int(match.group(1))
            if index >= width:
                raise ImportFileError(
                    f"the mapping names {key} but the file has {width} column(s) "
                    "(col_0 is the first; fix the mapping)"
                )
        elif header is not None:
            raise ImportFileError(
                f"the mapping names column {key!r}, which the header does not have "
                f"(columns: {', '.join(repr(h) for h in header[:20])})"
            )
        else:
            raise ImportFileError(
                f"the mapping names column {key!r} but the file has no header "
                "(use col_0, col_1, ... or set has_header)"
            )
        if target in positions:
            raise ImportFileError(f"the mapping maps two columns to {target!r}")
        positions[target.strip()] = index
    extra = tuple(sorted((k, i) for k, i in positions.items() if k not in ("email", "name")))
    return Mapping(positions["email"], positions.get("name"), extra, width)


def lines_of(read: Callable[[], bytes]) -> Iterator[str]:
    """Text lines (ends kept) from ``read()`` chunks until ``b""``; UTF-8, BOM dropped.
    A chunk that ends inside a line (or between ``\\r`` and ``\\n``) carries over."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    carry = ""
    line_no = 1
    while True:
        chunk = read()
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError:
            raise ImportFileError(
                f"the file is not UTF-8 text (near line {line_no}; save it as UTF-8 CSV)"
            ) from None
        if "\x00" in text:
            raise ImportFileError(
                f"the file has NUL bytes near line {line_no}: it is not a CSV text file"
            )
        if not chunk:
            if carry:
                yield carry
            return
        text = carry + text
        parts = text.splitlines(keepends=True)
        # A last part without its end waits for the next chunk (a "\r" may be half a "\r\n").
        carry = parts.pop() if parts and not parts[-1].endswith("\n") else ""
        line_no += len(parts)
        yield from parts


class RowParser:
    """Batches of rows from a CSV's lines; one instance per import (not thread-safe: one
    thread at a time calls :meth:`next_batch`)."""

    def __init__(
        self,
        lines: Iterator[str],
        mapping: dict[str, str],
        *,
        has_header: bool,
        delimiter: str,
        skip_rows: int = 0,
        batch_size: int = 5000,
    ):
        self._reader = csv.reader(lines, delimiter=delimiter, strict=True)
        self._spec = mapping
        self._has_header = has_header
        self._skip = skip_rows
        self._batch_size = batch_size
        self._mapping: Mapping | None = None
        self._pending: list[str] | None = None
        self.done = False

    def _next(self) -> list[str] | None:
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise ImportFileError(
                f"the file is not valid CSV at line {self._reader.line_num}: {exc}"
            ) from None

    def _start(self) -> Mapping:
        header: list[str] | None = None
        if self._has_header:
            header = self._next()
            if header is None:
                raise ImportFileError("the file is empty (it has no header row)")
        first = self._next()
        self._pending = first
        mapping = resolve_mapping(self._spec, header, len(first) if first is not None else 0)
        if header is None and first is None:
            self.done = True
        return mapping

    def next_batch(self) -> Batch | None:
        """The next batch, or None at the end of the file."""
        if self._mapping is None:
            self._mapping = self._start()
        if self.done:
            return None
        batch = Batch()
        m = self._mapping
        while batch.rows < self._batch_size:
            record = self._pending if self._pending is not None else self._next()
            self._pending = None
            if record is None:
                self.done = True
                break
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line is not a row
            if self._skip > 0:
                self._skip -= 1
                continue
            batch.rows += 1
            line = self._reader.line_num
            if m.email >= len(record):
                batch.invalid.append(Invalid(line, "missing email column", ",".join(record)))
                continue
            email = normalise_address(record[m.email])
            if not email:
                batch.invalid.append(Invalid(line, "empty email", ""))
                continue
            if not valid_address(email):
                batch.invalid.append(Invalid(line, "invalid address", record[m.email]))
                continue
            name = record[m.name].strip() if m.name is not None and m.name < len(record) else ""
            extra = {k: record[i] for k, i in m.extra if i < len(record)}
            batch.valid.append(
                Row(line, email, name[:200] or None, json.dumps(extra) if extra else "{}")
            )
        if batch.rows == 0 and self.done:
            return None
        return batch
