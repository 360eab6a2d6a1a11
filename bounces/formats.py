"""Non-standard bounce formats: the plain-text reports of Postfix, qmail, Exim, Sendmail,
Exchange, webmail providers and the rest.

No per-vendor parser is kept; the formats share a shape that one scanner reads:

* the report text comes before the returned message, which starts at a recognisable divider
  ("--- Below this line is a copy of the message", "------ This is a copy of the message",
  "----- Original message -----", a ``message/rfc822`` part, ...);
* each failed recipient is named on a line of its own (``<a@b>:``, an indented bare address,
  ``RCPT TO:<a@b>``, "delivery to the following recipient failed ...: a@b");
* the reason follows it (the remote server's reply, or the MTA's own words).

So the scanner cuts at the divider, finds recipient lines by their shape, and takes the text
up to the next recipient as that recipient's diagnostic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bounces.message import ParsedReport, parse_header_block

#: Local parts may hold symbols outside \w: SMTPUTF8 mailboxes use emoji (U+2600.., U+1F000..).
_ADDR = r"[\w.+'=/#&!%$*?^`{|}~\u2600-\u27bf\U0001f000-\U0001faff-]+@[\w-]+(?:\.[\w-]+)+"
ADDR_RE = re.compile(_ADDR)

_DIVIDER = re.compile(
    r"(?im)^[ \t>|]*(?:"
    r"-{2,}\s*(?:original message|this is a copy of|below this line is a copy|"
    r"(?:the )?(?:original|returned|unsent|undelivered|rejected) (?:message|mail|e-?mail)|"
    r"message (?:text |headers )?follows|unsent message below|headers of the message|"
    r"copy of (?:the )?message|returned mail)"
    r"|(?:original|returned|unsent|undelivered) message(?: headers)?(?: follows)?:?\s*$"
    r"|content-type: message/rfc822"
    r"|-{3,} original message -{3,}"
    r"|(?:the )?(?:original|returned) message (?:is attached|is below|follows)"
    r"|included is a copy of the message header"
    r"|-{20,}[ \t]*$(?=\n(?:received|return-path|message-id|date|from):)"
    r")")
_DIVIDER_FOLDED = re.compile(_DIVIDER.pattern.replace("(?im)", "(?m)", 1))
_HEADERISH = re.compile(r"(?m)^(?:Return-Path|Received|DKIM-Signature|Message-ID|From|Date):[ \t]")

_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|failed|notification|problem|report)|"
    r"failure notice|returned mail|mail delivery (?:failed|system|subsystem)|non-?deliver|"
    r"could not (?:be )?deliver|message not delivered|not (?:been )?delivered|delivery has failed|"
    r"rejected|warning: could not send|delayed mail|mail system error|delivery error|"
    r"nondeliverable|error sending message|permanent (?:delivery )?(?:error|failure)|"
    r"(?:delivery|transmission) (?:has )?failed|mail failure|returned to sender|bounced?\b|"
    r"unzustellbar|non remis|no entregado|delivery (?:delay|warning)|message delayed|"
    r"failed to deliver|sending failed|notificaci[oó]n|fehlgeschlagen|mail could not be delivered|"
    r"mail failed|returning to sender|error notification|エラー|不達|未達",
    re.IGNORECASE)
_FROM = re.compile(
    r"mailer-daemon|post_?master|mail delivery|mail ?administrator|mail system|"
    r"bounce|delivery (?:status|subsystem|notification)|mdaemon|daemon@|no-?reply@.*(?:mail|mx)|"
    r"noreply\+bounces|notifications?@.*(?:facebook|googlegroups)|mailerdaemon", re.IGNORECASE)
_BODY = re.compile(
    r"(?:could not be delivered|couldn'?t be delivered|was not delivered|undeliverable|"
    r"delivery (?:to the following recipients? )?(?:has )?failed|"
    r"permanent(?:ly)? (?:error|fatal|failure|failed)|"
    r"not be delivered to|following addresses had|returned to sender|delivery status notification|"
    r"unable to deliver|message delivery failed|remote host said|said: [45]\d\d|smtp error|"
    r"delivery attempts? (?:failed|will continue)|has been delayed|could not deliver|"
    r"rejected your message|your message (?:to .+ )?(?:was|has been|couldn'?t be|could not be) "
    r"(?:rejected|blocked|delivered)|failed permanently|mail delivery failed|"
    r"i'm afraid i wasn't able|"
    r"this is the mail ?system at|giving up on|delivery to the following|host unknown|"
    r"user unknown|no such user|mailbox (?:is )?(?:full|unavailable)|message could not be sent|"
    r"(?:mail|message) has been returned|error delivering your mail|invalid user address)")
_DELAYED = re.compile(
    r"(?:has been delayed|(?:is|was) delayed|delivery (?:is )?delayed|"
    r"delay(?:ed)? (?:mail|notification)|"
    r"will (?:continue|be retried|retry|keep trying)|not yet been delivered|still trying|"
    r"warning: could not send message for past|delivery warning|still in the queue|"
    r"(?:is|are) being retried|no action is required on your part|"
    r"message will be retried)")
_FINAL = re.compile(
    r"(?:i'?m not going to try again|giving up|gave up|permanent|failed permanently|"
    r"could not be delivered|has been returned|will not be retried|was not delivered|"
    r"delivery has failed|undeliverable)")

_RCPT_LINE = [
    re.compile(rf"^[ \t]*<({_ADDR})>"),                       # Postfix, qmail, Sendmail
    re.compile(rf"^[ \t]*\"?({_ADDR})\"?[ \t]*(?:[:(;,]|\.{{3}}|$)"),  # Exim, bare lines
    re.compile(rf"(?i)rcpt to:?[ \t]*<?({_ADDR})"),          # transcripts
    re.compile(rf"(?i)(?:recipients?|addressed to|to|for|address|user|mailbox|destinataire|"
               rf"empf[aä]nger|destinatario)\b[^@\n]{{0,40}}?[ \t:<'\"(]+({_ADDR})"),
    re.compile(rf"^[ \t]*[\w .()-]{{1,40}}:[ \t]*<?({_ADDR})>?[ \t]*$"),  # "Delivery failed: a@b"
    re.compile(rf"<?({_ADDR})>?"),                           # last resort: any address
]
_IGNORE_LOCAL = re.compile(
    r"^(?:post_?master|mailer-daemon|mailerdaemon|abuse|root|daemon|noreply|no-reply|"
    r"bounce[s]?|double-bounce|nobody|mail-daemon)$", re.IGNORECASE)
#: An X.400-style address type prefix glued to the local part (Exchange's ``dda:SMTP=a@b``).
_X400_PREFIX = re.compile(r"^(?:smtp|rfc-?822)=", re.IGNORECASE)
#: PMDF names the rewritten address, then the address the sender used: the latter is reported.
_ORIGINAL_ADDRESS = re.compile(rf"(?i)^[ \t]*original address:[ \t]*<?({_ADDR})")
_MESSAGE_ID_LINE = re.compile(r"(?i)message-?id|in-reply-to|references|\bid\b\s*[:=]?\s*<")


@dataclass(frozen=True, slots=True)
class TextRecipient:
    """A recipient found in a plain-text bounce with the text that explains it."""

    recipient: str
    diagnostic: str
    delayed: bool


def bounce_text(report: ParsedReport) -> str:
    """The report's own text, cut before the returned original message.

    When the original was pasted inline (no ``message/rfc822`` part), its headers are read
    from after the divider so attribution by Message-ID still works.
    """
    text = "\n".join(t for t in report.text_parts if t.strip())
    # An ASCII text folds case without moving any offset: scan the folded copy case-sensitively.
    match = _DIVIDER_FOLDED.search(text.lower()) if text.isascii() else _DIVIDER.search(text)
    if match:
        rest = text[match.end():]
        text = text[: match.start()]
        if not report.original_headers:
            body = rest.split("\n", 1)[1] if "\n" in rest else ""
            report.original_headers = parse_header_block(body.lstrip("\n -"))
    return text[:20000]


def looks_like_bounce(report: ParsedReport, text: str) -> bool:
    """Sender, subject and wording together say this is a delivery failure report."""
    if report.header("X-Failed-Recipients"):
        return True
    sender = report.header("From") + " " + report.header("Return-Path")
    from_hit = _FROM.search(sender) is not None or report.header("Return-Path").strip() == "<>"
    subject_hit = _SUBJECT.search(report.header("Subject")) is not None
    if not (from_hit or subject_hit):
        return False  # the body alone never makes a bounce
    body_hit = _BODY.search(text.lower()) is not None
    return (from_hit and (subject_hit or body_hit)) or (subject_hit and body_hit)


def is_delayed(subject: str, text: str) -> bool:
    """A warning that delivery is still being retried, not a final failure."""
    head = (subject + "\n" + text[:3000]).lower()
    return _DELAYED.search(head) is not None and _FINAL.search(head) is None


def _candidates(lines: list[str], exclude: set[str],
                keep_role: bool = False) -> list[tuple[int, str, int]]:
    """(line index, address, shape rank) for lines that name a recipient; role addresses
    (postmaster, ...) are skipped unless ``keep_role``."""
    found: list[tuple[int, str, int]] = []
    for index, line in enumerate(lines):
        if "@" not in line or _MESSAGE_ID_LINE.search(line):
            continue
        for rank, pattern in enumerate(_RCPT_LINE):
            match = pattern.search(line)
            if not match:
                continue
            addr = _X400_PREFIX.sub("", match.group(1).strip(".'\"").lower())
            if addr in exclude or (not keep_role and _IGNORE_LOCAL.match(addr.split("@")[0])):
                continue
            found.append((index, addr, rank))
            break
    return found


def _prefer_original(lines: list[str],
                     found: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    """Replace a rewritten recipient by the "Original address:" given on the next line."""
    out = []
    for index, addr, rank in found:
        nxt = _ORIGINAL_ADDRESS.match(lines[index + 1]) if index + 1 < len(lines) else None
        if nxt and "address" in lines[index].lower():
            addr = nxt.group(1).lower()
        out.append((index, addr, rank))
    return out


def _diagnostic(lines: list[str], start: int, stop: int) -> str:
    """Join the lines that explain one recipient, address line included."""
    chunk = [ln.strip() for ln in lines[start: min(stop, start + 16)]]
    return " ".join(" ".join(chunk).split())


_REPLY_CODE = re.compile(r"(?<![\d.])[45]\d\d(?:[ -][45]\.\d{1,3}\.\d{1,3})?(?![\d.])")


def _shared_reply(lines: list[str], first: int) -> str:
    """An SMTP reply quoted in the few lines just above the first recipient line (reports that
    state the reason once, then list the recipients it applies to), or ``""``."""
    for line in reversed(lines[max(0, first - 6): first]):
        stripped = line.strip()
        if _REPLY_CODE.match(stripped):
            return stripped
    return ""


def scan(report: ParsedReport, text: str, exclude: set[str],
         check_delay: bool = True) -> list[TextRecipient]:
    """Find each failed recipient of a plain-text bounce with its diagnostic text
    (``check_delay=False``: the caller has the Action already and needs no guess)."""
    lines = text.split("\n")
    delayed = check_delay and is_delayed(report.header("Subject"), text)
    found = _candidates(lines, exclude) or [
        (i, a, r) for i, a, r in _candidates(lines, set(), keep_role=True) if r <= 3]
    failed_hdr = [a.strip().lower() for a in report.header("X-Failed-Recipients").split(",")
                  if "@" in a]
    if not found and not failed_hdr:
        return []
    found = _prefer_original(lines, found)
    best_rank = min((rank for _, _, rank in found), default=0)
    chosen = [(i, a) for i, a, rank in found if rank == best_rank or best_rank > 1]
    out: dict[str, TextRecipient] = {}
    whole = ""
    shared = _shared_reply(lines, chosen[0][0]) if chosen else ""
    for pos, (index, addr) in enumerate(chosen):
        if addr in out:
            continue
        # The block runs to the next line naming a different recipient (the same address is
        # often repeated inside its own explanation).
        stop = next((i for i, a in chosen[pos + 1:] if a != addr), len(lines))
        diag = _diagnostic(lines, index, max(stop, index + 1))
        if shared and not _REPLY_CODE.search(diag):
            diag = f"{shared} {diag}"  # one reply stated above the list applies to all of it
        if _says_nothing(diag):
            # the recipient's own lines say nothing: read the whole report
            whole = whole or " ".join(text.split())
            diag = whole[:1000]
        if addr not in out:
            out[addr] = TextRecipient(addr, diag, delayed)
    for addr in failed_hdr:
        if addr not in out:
            whole = whole or " ".join(text.split())
            out[addr] = TextRecipient(addr, whole[:1000], delayed)
    return list(out.values())


def _says_nothing(diag: str) -> bool:
    """Fewer than 8 characters besides addresses and punctuation (a bare address line)."""
    if "@" not in diag:
        return len(diag.strip(" <>:.()*")) < 8
    return len(ADDR_RE.sub("", diag).strip(" <>:.()*")) < 8


def format_hint(recipient: str) -> str:
    """A reason some providers' formats imply regardless of wording (the text is localised).

    Google Groups answers a post it refuses (unknown group, or a sender without permission to
    post) in the sender's language; the refusal is about the sender, i.e. ``rejected``.
    """
    return "rejected" if recipient.endswith("@googlegroups.com") else ""


#: fml (a Japanese mailing-list manager) refusing a post: the list names itself in <...>.
_LIST_REFUSAL = re.compile(
    rf"(?i)(?:not (?:a )?member of this mailing list|fml system error|loop alert|"
    rf"spammers are not allowed)[^<\n]*<({_ADDR})>")


def list_refusal(report: ParsedReport, text: str) -> list[TextRecipient]:
    """An fml list server's refusal of a post (marked by its ``X-MLServer`` header): the
    "recipient" is the list that refused it."""
    if "fml" not in report.header("X-MLServer").lower():
        return []
    match = _LIST_REFUSAL.search(text)
    if match is None:
        return []
    return [TextRecipient(match.group(1).lower(), " ".join(text.split())[:1000], False)]
