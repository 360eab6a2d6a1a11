"""Where an import's file comes from: ``file://`` (a path on the host) or ``http(s)://``
(streamed with aiohttp). Other schemes (``s3://`` included) are refused by the payload model.

A source is opened on the event loop and read from the parser's thread through a blocking
``read()`` of one chunk at a time (``b""`` at the end): for HTTP each read is a coroutine
run on the loop (:func:`asyncio.run_coroutine_threadsafe`), so the body is never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from campaigns import ImportFileError

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


def check_root(path: Path, roots: list[str], what: str) -> None:
    """Refuse a path outside the configured roots (none configured: any path)."""
    if not roots:
        return
    resolved = path.resolve()
    for root in roots:
        if resolved.is_relative_to(Path(root).resolve()):
            return
    raise ImportFileError(
        f"{what} {path} is outside the allowed directories ({', '.join(roots)}; "
        "see MAILGATE_FILE_ROOTS)"
    )


@contextlib.asynccontextmanager
async def open_source(url: str, roots: list[str]) -> AsyncIterator[Callable[[], bytes]]:
    """A blocking chunk reader for ``url``, to be called from a thread."""
    scheme = url.partition("://")[0].lower()
    if scheme == "file":
        path = local_path(url)
        check_root(path, roots, "the file")
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
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            response = await session.get(url)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot fetch {url}: {exc}") from None
        async with response:
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
