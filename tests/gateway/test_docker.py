"""docker/: what can be checked without a Docker engine (none runs on these machines; a
rootless podman or buildah build would need the python base image from a container
registry, and these machines reach only PyPI, Debian's and npm's registries). The compose
file parses and wires the three services, publishes SMTP on a configurable address that is
not every interface's port 25 by default, and runs mailgate non-root on a read-only root
filesystem; the image's environment is a valid configuration; its HEALTHCHECK command
(/readyz), run in this virtualenv, passes against a running daemon."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml

from gateway.daemon import Daemon
from gateway.settings import Settings, load_settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_image_copies_every_package_the_distribution_installs() -> None:
    """Each package pyproject.toml installs (`packages.find`) is COPYed into the build
    stage: a package added later and forgotten here would be missing from the image, its
    entry points broken at start."""
    pyproject = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
    wanted = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        rest.split()[0]
        for word, rest in _dockerfile_instructions()
        if word == "COPY" and not rest.startswith("--from")
    }
    assert wanted <= copied, sorted(wanted - copied)


def test_compose_file_wires_postgres_redis_and_mailgate() -> None:
    """compose.yaml parses; mailgate depends on healthy PostgreSQL and Redis."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "mailgate"}
    mg = services["mailgate"]
    assert mg["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mg["depends_on"]["redis"]["condition"] == "service_healthy"
    fields = {f"MAILGATE_{name.upper()}" for name in Settings.model_fields}
    assert set(mg["environment"]) <= fields
    assert mg["build"]["dockerfile"] == "docker/Dockerfile"


def _default(text: str) -> str:
    """A compose value with every ${VAR:-default} replaced by its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_compose_publishes_smtp_on_a_configurable_address_not_all_interfaces() -> None:
    """The SMTP port is published on SMTP_PUBLISH_ADDRESS:SMTP_PUBLISH_PORT (default
    127.0.0.1:2525); no published port binds every interface; mailgate runs as a non-root
    user with a read-only root filesystem, no capabilities, a writable data volume and /tmp."""
    mg = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["mailgate"]
    smtp = next(p for p in mg["ports"] if p.endswith(":2525"))
    assert "${SMTP_PUBLISH_ADDRESS:-" in smtp and "${SMTP_PUBLISH_PORT:-" in smtp
    assert _default(smtp) == "127.0.0.1:2525:2525"
    for port in mg["ports"]:
        published = _default(port)
        assert published.count(":") == 2, f"{port} binds every interface"
        assert not published.startswith(("0.0.0.0:", "[::]:")), port
    assert mg["read_only"] is True and "/tmp" in mg["tmpfs"]
    assert mg["user"].split(":")[0] not in ("0", "root")
    assert any(v.endswith(":/var/lib/mailgate") for v in mg["volumes"])
    assert mg["cap_drop"] == ["ALL"] and "no-new-privileges:true" in mg["security_opt"]


def test_image_runs_as_non_root_with_a_valid_configuration() -> None:
    """The final stage sets a non-root USER, and its ENV is accepted by the settings model."""
    instructions = _dockerfile_instructions()
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    users = [arg for word, arg in final if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env: dict[str, str] = {}
    for word, arg in final:
        if word == "ENV":
            for item in shlex.split(arg):
                key, _, value = item.partition("=")
                env[key] = value
    overrides = {
        k.removeprefix("MAILGATE_").lower(): v for k, v in env.items() if k.startswith("MAILGATE_")
    }
    settings = load_settings(**overrides)
    assert settings.http_listen.port == 8025
    cmd = [arg for word, arg in final if word in ("ENTRYPOINT", "CMD")]
    assert json.loads(cmd[0]) == ["mailgate"] and json.loads(cmd[1]) == ["run"]


async def test_healthcheck_command_passes_against_the_daemon(settings: Settings) -> None:
    """The image's HEALTHCHECK command asks /readyz: it exits 0 against a running daemon, 1
    without one."""
    healthcheck = next(arg for word, arg in _dockerfile_instructions() if word == "HEALTHCHECK")
    assert "/readyz" in healthcheck
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert argv[0] == "python"
    daemon = Daemon(settings, factories={})
    task = asyncio.create_task(daemon.run(install_signals=False))
    await asyncio.wait_for(daemon.started.wait(), 30)
    assert daemon.http is not None
    script = re.sub(r"127\.0\.0\.1:8025", f"127.0.0.1:{daemon.http.bound_port}", argv[2])
    proc = await asyncio.create_subprocess_exec(sys.executable, argv[1], script)
    assert await proc.wait() == 0
    daemon.request_stop()
    await asyncio.wait_for(task, 30)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, argv[1], script, stderr=asyncio.subprocess.DEVNULL
    )
    assert await proc.wait() == 1
