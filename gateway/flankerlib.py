"""Quiet access to flanker, the MIME library every package shares.

flanker 0.9.11 (its last release) prints PLY grammar warnings on stderr when its address
parser is first imported, and trips DeprecationWarnings (``cgi``, ``imghdr``) on modern
Pythons. Neither is actionable, and a CLI must not show them, so every module reaches
flanker through :func:`mime` and :func:`bounce_module` here instead of importing it directly.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}


def _quiet_import() -> None:
    with _lock:
        if _modules:
            return
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
