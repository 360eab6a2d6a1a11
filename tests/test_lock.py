"""The lock files agree with pyproject.toml: every direct requirement is pinned at a version
its range admits, nothing pinned as direct is gone from pyproject.toml, every pin carries
hashes, and the dev lock pins the runtime packages at the runtime lock's versions.
`make lock` regenerates both when this fails."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, Pin]:
    """name -> pin, with its hash count and `# via` lines (uv's annotation format)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = pins[canonicalize_name(match[1])] = Pin(match[2])
            in_via = False
            continue
        text = line.strip()
        if current is None or not text:
            continue
        if text.startswith("--hash=sha256:"):
            current.hashes += 1
        elif text.startswith("# via"):
            rest = text.removeprefix("# via").strip()
            in_via = True
            if rest:
                current.via.append(rest)
        elif in_via and text.startswith("#"):
            current.via.append(text.lstrip("#").strip())
    return pins


def direct_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs.extend(Requirement(r) for r in project["optional-dependencies"][extra])
    return reqs


LOCKS = {
    "requirements.lock": ("embedded",),
    "requirements-dev.lock": ("embedded", "test"),
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_direct_requirement_in_range(lock: str) -> None:
    """Each requirement of pyproject.toml is pinned, and its pin satisfies the range."""
    pins = read_lock(ROOT / lock)
    for req in direct_requirements(*LOCKS[lock]):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in {lock}: run `make lock`"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"{lock} pins {name}=={pins[name].version}, outside {req.specifier}: run `make lock`"
        )


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_has_no_stale_direct_pins_and_every_pin_is_hashed(lock: str) -> None:
    """A pin the lock says comes from pyproject.toml is still required there; every pin has
    at least one sha256 hash (pip installs it with --require-hashes)."""
    pins = read_lock(ROOT / lock)
    wanted = {canonicalize_name(r.name) for r in direct_requirements(*LOCKS[lock])}
    for name, pin in pins.items():
        assert pin.hashes > 0, f"{name} has no hash in {lock}"
        if any(v.startswith("mailgate") for v in pin.via):
            assert name in wanted, f"{lock} pins {name} for pyproject.toml, which no longer asks"


def test_dev_lock_agrees_with_runtime_lock() -> None:
    """The test environment runs the same versions the daemon ships with."""
    runtime = read_lock(ROOT / "requirements.lock")
    dev = read_lock(ROOT / "requirements-dev.lock")
    for name, pin in runtime.items():
        assert name in dev, f"{name} is in requirements.lock but not in requirements-dev.lock"
        assert dev[name].version == pin.version, (
            f"{name}: {pin.version} in requirements.lock, {dev[name].version} in the dev lock"
        )


def test_lock_reader_reads_pins_hashes_and_via() -> None:
    """The reader itself: a two-entry sample in uv's format."""
    sample = ROOT / "requirements.lock"
    pins = read_lock(sample)
    assert pins["flanker"].via == ["mailgate (pyproject.toml)"]
    assert pins["flanker"].hashes >= 1
    assert any("flanker" in v for v in pins["ply"].via)
