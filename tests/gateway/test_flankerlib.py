"""flanker's parse tables: a half-written table (another process writing it after an
install) is dropped and read again, not cached for the life of the process."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import sys, types
from gateway import flankerlib
flankerlib.IMPORT_ATTEMPTS = int(sys.argv[1])
# What a process sees while another one is still writing the table after an install.
sys.modules["flanker.addresslib._parser.mailbox_or_url_list_parsetab"] = types.ModuleType("x")
try:
    msg = flankerlib.mime().from_string(b"From: a@b.test\\r\\nSubject: hi\\r\\n\\r\\nbody\\r\\n")
    print("parsed", msg.subject)
except AttributeError as exc:
    print("failed", exc)
"""


def run(attempts: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(attempts)], capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip()


def test_half_written_parse_table_is_read_again() -> None:
    """With retries the import recovers and parses; with one attempt it fails as it did."""
    assert run(5) == "parsed hi"
    assert run(1).startswith("failed") and "_tabversion" in run(1)


def test_install_step_writes_the_tables() -> None:
    """`python -m gateway.flankerlib` (run by make venv and the Docker build) succeeds."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.flankerlib"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "flanker parse tables ready" in out.stdout
