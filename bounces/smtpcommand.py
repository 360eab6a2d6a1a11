"""The SMTP command a refusal answered, read from a report's text.

The command decides several reasons (:mod:`bounces.reasons`): "unknown user" at RCPT is an
unknown user, the same words after DATA a content filter; a refusal at MAIL is about the sender;
at HELO/EHLO or on connection, about the client. MTAs say it in a few fixed ways:

* Postfix: ``(in reply to RCPT TO command)``, ``(in reply to end of DATA command)``;
  (matched as the MTAs print them, case and all: the same words in a remote server's prose are
  not a statement about the session);
* Sendmail and others quoting the transcript: ``>>> RCPT To:<a@b>`` then ``<<< 550 ...``;
* Exim: ``SMTP error from remote mail server after RCPT TO:<a@b>:``;
* qmail: ``Connected to 192.0.2.1 but sender was rejected.`` (MAIL), ``... but my name was
  rejected.`` (HELO), ``does not like recipient.`` (RCPT), ``failed after I sent the message.``
  (DATA);
* Postfix again: ``refused to talk to me:`` (the greeting, read as HELO).

Otherwise the command words themselves, upper-case as the protocol writes them: when several
appear, the one latest in a session wins (a text naming MAIL FROM and RCPT TO failed at RCPT).
"""

from __future__ import annotations

import re

#: MTA phrasings that name the stage outright, checked before the bare command words: one
#: alternation; group 1 is Postfix's command, the named groups map to a fixed command.
_PHRASED = re.compile(
    r"in reply to (?:the )?(?:end of )?(RCPT|MAIL|DATA|EHLO|HELO|QUIT|STARTTLS|AUTH|RSET|"
    r"XFORWARD|BDAT)\b|(?P<MAIL>but sender was rejected)|(?P<HELO>but my name was rejected|"
    r"refused to talk to me)|(?P<RCPT>does not like recipient)|"
    r"(?P<DATA>failed after I sent the message|failed on DATA command)")
#: Bare command words in protocol order; a later one means the session got further.
_WORDS = re.compile(
    r"(?<![0-9A-Za-z@`])(?:(HELO|EHLO|STARTTLS|RCPT|DATA|QUIT|XFORWARD)(?![0-9A-Za-z@`])|"
    r"(AUTH (?:PLAIN|LOGIN|CRAM-|DIGEST-)|MAIL F))")
_ORDER = {"HELO": 0, "EHLO": 0, "STAR": 1, "AUTH": 2, "MAIL": 3, "RCPT": 4, "DATA": 5,
          "QUIT": 6, "XFOR": 7}
_NAME = {"STAR": "STARTTLS", "XFOR": "XFORWARD"}


def find(text: str) -> str:
    """The SMTP command ``text`` says the failure answered (``RCPT``, ``DATA`` ...) or ``""``."""
    if not text:
        return ""
    match = _PHRASED.search(text)
    if match:
        return match.group(1).upper() if match.group(1) else str(match.lastgroup)
    best = ""
    for match in _WORDS.finditer(text):
        head = (match.group(1) or match.group(2))[:4]
        if not best or _ORDER[head] > _ORDER[best]:
            best = head
    return _NAME.get(best, best)


_TRANSCRIPT = re.compile(r"(?m)^[ \t]*>>> ?(.*)$")


def from_transcript(text: str) -> str:
    """The command of the first client line of a quoted session transcript (``>>> RCPT TO:``),
    which Sendmail and Courier print before the server's refusal; ``""`` if there is none."""
    match = _TRANSCRIPT.search(text)
    return find(match.group(1)) if match else ""
