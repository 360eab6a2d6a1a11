"""aioimaplib 2.0: what ingest needs that the library does not offer.

* :func:`install_feed`: aioimaplib's ``data_received`` formats every received chunk into a
  debug message, logged or not (``'%s' % bytes``: ~0.7 ms per 256 KB, ~10 % of the CPU of a
  backlog, bench/README.md "IMAP ingest" (c) step 3), and handles each line one recursion
  level deeper, so a read of ~1,000 lines overflowed the stack (the same FETCH then failed
  after every reconnect). The replacement feeds the protocol FEED_BYTES of lines at a time,
  a literal in progress whole, and tells the caller of every untagged line (aioimaplib drops
  an ``EXISTS`` that arrives with the answer to another command).
* :func:`abort`: drop a connection and cancel every task aioimaplib leaves waiting (its IDLE
  waiter never finishes when the connection dies during IDLE).

Internals touched (checked by tests/gateway/test_compat.py): ``IMAP4ClientProtocol``'s
``_untagged_response``, ``_handle_responses``, ``_handle_line``, ``incomplete_line``,
``current_command``, ``tasks``, ``transport``; ``Command``'s ``wait_literal_data``,
``_expected_size``, ``_resp_literal_data``; ``IMAP4``'s ``_idle_waiter``, ``_client_task``,
``tasks``; ``IncompleteRead``'s ``cmd`` and ``data``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aioimaplib

from gateway.compat import require

VERSION = require("aioimaplib", ("2.0.",))
FEED_BYTES = 4096  # IMAP lines handed to aioimaplib at once


def install_feed(protocol: Any, on_untagged: Callable[[bytes], None]) -> None:
    """Replace ``protocol``'s ``data_received`` (see the module docstring); ``on_untagged``
    sees every untagged line before aioimaplib handles it."""
    original = protocol._untagged_response

    def untagged(line: bytes) -> Any:
        on_untagged(line)
        return original(line)

    protocol._untagged_response = untagged

    def feed(data: bytes) -> None:
        try:
            protocol._handle_responses(
                protocol.incomplete_line + data, protocol._handle_line, protocol.current_command
            )
            protocol.incomplete_line = b""
            protocol.current_command = None
        except aioimaplib.IncompleteRead as incomplete:
            protocol.current_command = incomplete.cmd
            protocol.incomplete_line = incomplete.data

    def data_received(data: bytes) -> None:
        start = 0
        while start < len(data):
            cmd = protocol.current_command
            step = FEED_BYTES
            if cmd is not None and cmd.wait_literal_data():
                step += cmd._expected_size - len(cmd._resp_literal_data)
            feed(data[start : start + step])
            start += step

    protocol.data_received = data_received


def abort(client: aioimaplib.IMAP4) -> None:
    """Drop the connection now and cancel what aioimaplib left waiting."""
    waiter = getattr(client, "_idle_waiter", None)
    if waiter is not None:
        waiter.cancel()
    tasks = [*client.tasks, *client.protocol.tasks, client._client_task]
    for task in tasks:
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" noise
    transport = client.protocol.transport
    if transport is not None:
        transport.abort()
