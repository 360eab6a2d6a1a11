"""Where an import's file comes from: ``file://`` (a path on the host) or ``http(s)://``
(streamed with aiohttp). Other schemes (``s3://`` included) are refused by the payload model.

Both are someone else's input (a tenant's upload URL), so both are fenced: a ``file://`` path
must lie under ``data_dir/imports``, ``data_dir/exports`` or a directory of ``file_roots``
(an import of /proc/self/environ would otherwise hand its lines back as invalid rows), and an
HTTP source passes the SSRF guard (:mod:`gateway.urlguard`: no loopback, private or
link-local address unless ``import_allow_private``; no redirects, which could point at one).

A source is opened on the event loop and read from the parser's thread through a blocking
``read()`` of one chunk at a time (``b""`` at the end): for HTTP each read is a coroutine
run on the loop (:func:`asyncio.run_coroutine_threadsafe`), so the body is never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from campaigns import ImportFileError
from gateway import urlguard
from gateway.settings import Settings

CHUNK_BYTES = 1 << 20
HTTP_TIMEOUT_S = 60.0


class SourceUnavailable(Exception):
    """A temporary failure to read the file (HTTP 5xx, connection refused): retried."""


def local_path(url: str) -> Path:
    """The path of a ``file://`` URL (``file:///srv/x.csv`` or ``file://localhost/...``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ImportFileError(f"{url}: a file:// URL names a path on this host, not {parts.netloc}")
    return Path(unquote(parts.path))


def allowed_roots(settings: Settings) -> list[Path]:
    """The directories ``file://`` URLs of import and export jobs may name: the daemon's own
    ``data_dir/imports`` and ``data_dir/exports``, then ``file_roots``."""
    data = Path(settings.data_dir)
    return [data / "imports", data / "exports", *(Path(r) for r in settings.file_roots)]


def under_roots(path: Path, roots: Sequence[Path]) -> bool:
    """True when ``path`` (symlinks and ``..`` resolved) lies under one of ``roots``."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def check_root(path: Path, roots: Sequence[Path], what: str) -> None:
    """Refuse a path outside ``roots`` (see :func:`allowed_roots`)."""
    if not under_roots(path, roots):
        raise ImportFileError(
            f"{what} {path} is outside the allowed directories "
            f"({', '.join(str(r) for r in roots)}; put it there or add its directory to "
            "MAILGATE_FILE_ROOTS)"
        )


def import_policy(settings: Settings) -> urlguard.Policy:
    """The SSRF guard's terms for import file URLs."""
    return urlguard.Policy(
        "import file URL", "MAILGATE_IMPORT_ALLOW_PRIVATE", settings.import_allow_private
    )


@contextlib.asynccontextmanager
async def open_source(url: str, settings: Settings) -> AsyncIterator[Callable[[], bytes]]:
    """A blocking chunk reader for ``url``, to be called from a thread."""
    scheme = url.partition("://")[0].lower()
    if scheme == "file":
        path = local_path(url)
        check_root(path, allowed_roots(settings), "the file")
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
        with handle:
            yield lambda: handle.read(CHUNK_BYTES)
        return
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=HTTP_TIMEOUT_S, sock_read=HTTP_TIMEOUT_S
    )
    policy = import_policy(settings)
    refusal = urlguard.refusal(url, policy)
    if refusal is not None:
        raise ImportFileError(refusal)
    resolver = urlguard.GuardedResolver(policy, error=ImportFileError)
    connector = aiohttp.TCPConnector(resolver=resolver)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        try:
            response = await session.get(url, allow_redirects=False)
        except ImportFileError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot fetch {url}: {exc}") from None
        async with response:
            if 300 <= response.status < 400:
                raise ImportFileError(
                    f"{url} answered HTTP {response.status} (a redirect, not followed: give "
                    "the final URL)"
                )
            if response.status >= 500 or response.status == 429:
                raise SourceUnavailable(f"{url} answered HTTP {response.status}")
            if response.status != 200:
                raise ImportFileError(f"{url} answered HTTP {response.status} (check the URL)")

            def read() -> bytes:
                future = asyncio.run_coroutine_threadsafe(response.content.read(CHUNK_BYTES), loop)
                try:
                    return future.result(timeout=HTTP_TIMEOUT_S * 2)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise SourceUnavailable(f"reading {url} failed: {exc}") from None

            yield read
