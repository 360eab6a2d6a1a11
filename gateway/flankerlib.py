"""Quiet access to flanker, the MIME library every package shares.

flanker 0.9.11 (its last release) prints PLY grammar warnings on stderr when its address
parser is first imported, and trips DeprecationWarnings (``cgi``, ``imghdr``) on modern
Pythons. Neither is actionable, and a CLI must not show them, so every module reaches
flanker through :func:`mime` and :func:`bounce_module` here instead of importing it directly.

Its address parser also writes PLY parse tables (``*_parsetab.py``) into its own package the
first time it is imported after an install. Two processes doing that at once can read each
other's half-written table (``module ... has no attribute '_tabversion'``), and the broken
module then stays cached for the life of the process: a clean-clone CI run lost every
message parse that way. So ``python -m gateway.flankerlib`` (run by ``make venv`` and the
Docker build, before anything runs concurrently) writes the tables once, and an import that
meets a half-written table drops it and tries again.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
import warnings
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}


IMPORT_ATTEMPTS = 5


def _quiet_import() -> None:
    with _lock:
        if _modules:
            return
        for attempt in range(1, IMPORT_ATTEMPTS + 1):
            try:
                _import_once()
                return
            except (AttributeError, ImportError, SyntaxError):
                # A parse table another process is writing right now: forget what was
                # imported of flanker and read the tables again once that write is done.
                for name in [m for m in sys.modules if m.startswith("flanker")]:
                    del sys.modules[name]
                if attempt == IMPORT_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)


def _import_once() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # PLY writes its table warnings to fd 2 through a logger bound at import time;
        # redirect both the Python stream and the file descriptor for the import only.
        saved_fd = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(io.StringIO()):
                os.dup2(devnull.fileno(), 2)
                import flanker.addresslib.address as address
                import flanker.mime as fmime
                import flanker.mime.bounce as fbounce
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
    _modules["mime"] = fmime
    _modules["bounce"] = fbounce
    _modules["address"] = address


def mime() -> Any:
    """Return the ``flanker.mime`` module (imported once, quietly)."""
    _quiet_import()
    return _modules["mime"]


def bounce_module() -> Any:
    """Return the ``flanker.mime.bounce`` module (imported once, quietly)."""
    _quiet_import()
    return _modules["bounce"]


def address() -> Any:
    """Return the ``flanker.addresslib.address`` module (imported once, quietly)."""
    _quiet_import()
    return _modules["address"]


if __name__ == "__main__":
    # Install step: write flanker's parse tables now, while nothing else imports it.
    _quiet_import()
    print("flanker parse tables ready")
