"""The README's generated sections, rewritten from the code they describe.

``python -m gateway.readme README.md`` regenerates each section between its markers
(``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``); tests check that the README holds
what these functions generate, so the documentation cannot drift from the models.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from gateway.jobs import contracts
from gateway.settings import reference_markdown as settings_reference

SECTIONS: dict[str, Callable[[], str]] = {
    "settings-reference": settings_reference,
    "queue-reference": contracts.reference_markdown,
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"


def render(text: str) -> str:
    """``text`` with every generated section replaced by its current content."""
    for name, generate in SECTIONS.items():
        start, end = markers(name)
        head, found, rest = text.partition(start)
        if not found:
            raise ValueError(f"README has no {start.strip()} marker")
        _, _, tail = rest.partition(end)
        text = f"{head}{start}{generate()}\n{end}{tail}"
    return text


def update(path: Path) -> bool:
    """Rewrite the generated sections of ``path``; True when something changed."""
    text = path.read_text()
    new = render(text)
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover - documentation helper
    update(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
