"""``mailgate classify``: classify bounce files from the command line.

One line per (file, recipient): JSON objects with ``--json`` (the form the corpus scorer
reads), an aligned table without. Registered through the ``mailgate.commands`` entry point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bounces.classify import classify
from bounces.model import BounceResult
from gateway.cli import Progress

_COLUMNS = ("file", "kind", "recipient", "bounce_type", "reason", "status", "diagnostic")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``classify`` subcommand to the mailgate CLI."""
    parser = subparsers.add_parser(
        "classify", help="classify bounce messages (DSN, ARF, auto-reply, MTA text formats)",
        description="Classify each FILE; print one line per (file, recipient).")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("files", nargs="+", metavar="FILE", help="raw RFC 5322 message files")
    parser.set_defaults(handler=run_classify)


def _row(name: str, result: BounceResult) -> dict[str, object]:
    return {"file": name, "kind": result.kind, "recipient": result.recipient,
            "bounce_type": result.bounce_type, "reason": result.reason,
            "status": result.status, "diagnostic": result.diagnostic}


def run_classify(args: argparse.Namespace) -> int:
    """Classify the files named in ``args``; exit 1 if any could not be read, else 0."""
    status = 0
    rows: list[dict[str, object]] = []
    progress = Progress(len(args.files) if len(args.files) > 50 else 0, "classifying")
    for name in args.files:
        progress.advance()
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            print(f"mailgate: cannot read {name}: {reason} (check the path)", file=sys.stderr)
            status = 1
            continue
        rows.extend(_row(name, result) for result in classify(raw))
    progress.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        _print_table(rows)
    return status


def _print_table(rows: list[dict[str, object]]) -> None:
    """Aligned columns; the diagnostic is cut to keep one line per row."""
    cells = [[_cell(row[c], c) for c in _COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(_COLUMNS)]
    widths[-1] = len(_COLUMNS[-1])
    print("  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip())
    for row_cells in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)).rstrip())


def _cell(value: object, column: str) -> str:
    text = "" if value is None else str(value)
    return text[:80] if column == "diagnostic" else text
