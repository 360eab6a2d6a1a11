"""RFC 3834 automatic responses (vacation and out-of-office replies).

Checked only after the message proved not to be a delivery report: MTAs mark their bounces
``Auto-Submitted: auto-replied`` as well, so that header alone cannot tell a bounce apart.
"""

from __future__ import annotations

import re

from bounces.message import ParsedReport

_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respuesta)|auto:|autoreply|"
    r"out of (?:the )?office|vacation|abwesenheit|r[ée]ponse automatique|respuesta autom[aá]tica|"
    r"risposta automatica|automatisch antwoord|away from)", re.IGNORECASE)


def is_auto_reply(report: ParsedReport) -> bool:
    """True for a message its sender's software wrote in reply to a message it received."""
    auto = report.header("Auto-Submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    if report.header("X-Autoreply") or report.header("X-Autorespond") or report.header(
            "X-Autoresponse"):
        return True
    if report.header("Precedence").lower() == "auto_reply":
        return True
    if report.header("X-Auto-Response-Suppress") and _SUBJECT.search(report.header("Subject")):
        return True
    return _SUBJECT.search(report.header("Subject")) is not None
