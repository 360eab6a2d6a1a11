"""The ``classify`` CLI subcommand, driven through a parser built the way gateway's CLI does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bounces import commands

FIXTURES = Path(__file__).parent / "fixtures"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mailgate")
    commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_json_lines_per_file_and_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object per (file, recipient) with the scorer's fields."""
    files = [str(FIXTURES / "postfix_dsn_userunknown.eml"), str(FIXTURES / "not_bounce.eml")]
    args = _parse(["classify", "--json", *files])
    assert args.handler(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["recipient"], r["reason"]) for r in rows] == [
        ("dsn", "nobody@rcpt.test", "userunknown"),
        ("not_bounce", "", ""),
    ]
    assert set(rows[0]) == {
        "file",
        "kind",
        "recipient",
        "bounce_type",
        "reason",
        "status",
        "diagnostic",
    }


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the output is a header row and one aligned row per result."""
    args = _parse(["classify", str(FIXTURES / "qmail_mailboxfull.eml")])
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["file", "kind", "recipient"]
    assert "mailboxfull" in lines[1]


def test_unreadable_file_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file is reported on stderr and makes the exit status 1."""
    args = _parse(["classify", "--json", str(tmp_path / "missing.eml")])
    assert args.handler(args) == 1
    assert "missing.eml" in capsys.readouterr().err
