"""Redis Sentinel URLs: ``redis+sentinel://[[user]:password@]host:port,host:port/service/db``.

redis-py reads ``redis://``, ``rediss://`` and ``unix://`` URLs itself; a Sentinel
deployment names several sentinels and the monitored service instead of one server, which
no redis-py URL can say. This module parses that form (the settings validator and
:func:`gateway.app.make_redis` both use it, so what the settings accept is what the client
gets). Query options: ``sentinel_password`` (when the sentinels themselves ask for one;
the password before ``@`` is the primary's and replicas').
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def where(self) -> str:
        """For messages: the sentinels and the service, never a password."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"service {self.service!r} via sentinels {hosts}"


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [v6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"sentinel {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel {item!r}: the port is not a number between 1 and 65535")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a ``redis+sentinel://`` URL; a ValueError says what is wrong with it."""
    if not is_sentinel(url):
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        user, sep, secret = creds.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    items = [item.strip() for item in netloc.split(",") if item.strip()]
    if not items:
        raise ValueError("the URL names no sentinel (redis+sentinel://host:port,.../service/db)")
    sentinels = tuple(_host_port(item) for item in items)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("the URL names no service (redis+sentinel://host:port,.../service/db)")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("expected /service_name or /service_name/db after the sentinels")
    options = parse_qs(query)
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: sentinel_password)")
    sentinel_password = options.get("sentinel_password", [None])[0]
    return SentinelUrl(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )
