"""RFC 3834 automatic responses (vacation and out-of-office replies), as the bounce
classifier asks: the decision is :func:`gateway.messagekind.is_automatic`, the one
classifier ingest and bounces share.

Checked only after the message proved not to be a delivery report: MTAs give their bounces
the RFC 3834 "auto-replied" mark as well, so that mark alone cannot tell a bounce apart.
"""

from __future__ import annotations

from bounces.message import ParsedReport
from gateway.messagekind import is_automatic


def is_auto_reply(report: ParsedReport) -> bool:
    """True for a message its sender's software wrote in reply to a message it received."""
    return is_automatic(report.header)
