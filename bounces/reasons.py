"""Bounce reasons: diagnostic text and status codes to one of Sisimai's reason names.

Two sources decide a reason. An enhanced status code names one when it is specific (``5.2.2`` is
a full mailbox); the diagnostic text names one when the code is generic (``5.0.0``, ``5.7.1``)
or absent, which is most of the time in practice. Text rules are ordered: earlier reasons win
because their phrases are the more specific (``mailbox full`` before ``user unknown``, which
itself comes before the catch-all ``blocked``). Rules are phrases as providers and MTAs word
them, never tied to any one message.
"""

from __future__ import annotations

import re

#: Network failures worded precisely enough to outrank a delivery-time-expired status.
_NETWORK_PRECISE = [
    r"routing loop", r"mail (?:forwarding )?loop", r"too many hops", r"hop count exceeded",
    r"loop detected", r"(?:mail|message) loop(?:s|ing)", r"forwarding loop",
    r"host name lookup failure", r"name server reply", r"dns query failed",
    r"wasn'?t able to establish an smtp connection", r"could not connect and send",
    r"dns records for the destination computer could not be found", r"no route to host",
    r"host not found, try again", r"unable to resolve route", r"network error",
]

_RULES_SRC: list[tuple[str, list[str]]] = [
    ("mailboxfull", [
        r"mail ?box (?:is )?full", r"mailbox (?:size limit|quota usage|over quota|has exceeded)",
        r"over (?:the allowed |disk )?quota", r"quota (?:exceeded|violation|full)",
        r"exceed(?:ed|s|ing)? (?:the |its |their )?(?:mailbox |storage |disk )?quota",
        r"is over (?:the )?quota", r"user over quota", r"full mailbox", r"mailfolder is full",
        r"(?:not|insufficient) enough (?:storage|space)", r"does not have enough space",
        r"exceeded storage allocation", r"disk quota exceeded", r"mailbox exceeded the local limit",
        r"space has been used up", r"too much mail data", r"exceeding its mailbox quota",
        r"recipient reached disk quota", r"would exceed (?:maximum|the) allowed storage",
        r"mailbox is over", r"has exceeded (?:its|the) (?:disk space|storage|quota)",
        r"too many messages on the server", r"quota exceed", r"mailbox would exceed",
        r"insufficient (?:disk )?space", r"inbox is full", r"boite du destinataire pleine",
        r"account is (?:temporarily )?over quota", r"exceeding receiving limits",
    ]),
    ("mesgtoobig", [
        r"exceeded the maximum (?:incoming|inbound) message size", r"line limit exceeded",
        r"message (?:size )?(?:is )?too (?:big|large)", r"message (?:file )?too (?:big|large)",
        r"message size exceeds", r"exceeded maximum (?:inbound )?message size",
        r"size limit", r"message length exceeds",
        r"larger than (?:the )?(?:current )?(?:system )?limit",
        r"size of (?:the )?message exceeds", r"message exceeds (?:the )?(?:maximum|size|local)",
        r"(?:email|mail) (?:is )?too large",
        r"exceeds (?:the )?maximum (?:allowed )?(?:message )?size",
        r"message too long", r"size exceeds (?:the )?(?:maximum|fixed)",
    ]),
    ("exceedlimit", [
        r"message too large for this recipient", r"recipient'?s? (?:message )?limit",
        r"exceeds? (?:the )?(?:recipient|size) limit",
    ]),
    ("suspend", [
        r"mailbox is frozen", r"is frozen",
        r"account (?:has been |is |was )?(?:disabled|suspended|deactivated|inactive|frozen|locked)",
        r"mailbox (?:has been |is )?(?:disabled|suspended|deactivated|inactive)",
        r"(?:is|has been) (?:temporarily )?(?:suspended|deactivated|disabled)",
        r"recipient (?:is )?suspended", r"user suspended", r"not an active (?:user|address)",
        r"mailbox unavailable or inactive", r"address (?:is )?(?:disabled|inactive|deactivated)",
        r"account expired", r"currently suspended", r"boite du destinataire archivee",
        r"email account .* (?:has been |is )(?:disabled|suspended)", r"mailbox is inactive",
        r"user not active", r"this account has been (?:disabled|blocked|suspended)",
        r"recipient'?s? (?:account|mailbox) is (?:disabled|inactive|suspended|blocked)",
        r"is inactive", r"dormant",
    ]),
    ("hasmoved", [r"has been replaced by", r"no longer on server", r"address has moved"]),
    ("norelaying", [
        r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed))", r"relay not permitted",
        r"unable to relay", r"not permitted to relay", r"we do not relay", r"relaying denied",
        r"relay access denied", r"not (?:a )?gateway", r"no relaying", r"relay rejected",
        r"cannot relay", r"relaying mail to .+ is not allowed", r"not local host",
        r"email address is not verified",
        r"that domain isn'?t in my list of allowed rcpthosts", r"relay prohibited",
    ]),
    ("authfailure", [
        r"\bspf\b.*(?:fail|reject|not (?:pass|authorized)|does not pass)",
        r"(?:fail|reject)\w* [^.]{0,60}\bspf\b", r"\bdkim\b.*(?:fail|invalid|reject)",
        r"\bdmarc\b.*(?:fail|policy|reject)", r"sender policy framework",
        r"not authorized to send on behalf", r"authentication (?:failure|check failed)",
        r"sender (?:id|address) (?:check )?failed", r"unauthenticated email",
        r"email (?:is )?not authenticated", r"fails? to pass authentication checks",
        r"does not have authentication information",
    ]),
    ("userunknown", [
        r"invalid final delivery userid", r"user not exist", r"address couldn'?t be found",
        r"check if (?:the )?address is correct", r"recipient address rejected\.",
        r"ディレクトリのリストにありません", r"addressee unknown",
        r"user (?:is )?unknown",
        r"unknown (?:user|recipient|mailbox|local[- ]?part|e-?mail address|address)",
        r"no such (?:user|mailbox|recipient|address|person|account)", r"user not found",
        r"user (?:does not|doesn'?t) exist",
        r"(?:address|mailbox|recipient|account|user) .{0,60}(?:does not|doesn'?t) exist",
        r"(?:address|mailbox|recipient|user|account) (?:was )?not found",
        r"invalid (?:recipient|mailbox|address|user)", r"not a valid (?:user|mailbox|recipient)",
        r"mailbox (?:is )?unavailable", r"mailbox not (?:present|available)",
        r"bad (?:destination )?(?:recipient|mailbox|address)", r"bad[-_ ]recipient", r"badrcptto",
        r"recipient (?:address )?rejected: (?:user|unknown|invalid|access denied)",
        r"recipient (?:unknown|not (?:found|ok|exist)|is not local|rejected)",
        r"not (?:a )?(?:known|local|valid) (?:user|address|recipient)", r"is not a known user",
        r"no (?:mailbox|account) (?:here )?by that name", r"no mail ?box (?:available )?for",
        r"address unknown", r"5\.1\.0 address rejected",
        r"this user doesn'?t have a .+ account", r"there is no one at this address",
        r"email account that you tried to reach does not exist", r"no valid recipients",
        r"nonexist|non-existent|non existent", r"recipnotfound|recipientnotfound",
        r"requested action not taken: mailbox unavailable", r"5\.1\.1 bad address",
        r"address no longer accepts mail", r"no such address", r"name is not recognized",
        r"user not local", r"not listed in", r"address is invalid", r"dosn'?t exist",
        r"mailbox .{0,40}unavailable", r"<[^>]+> not found", r"is not a valid mailbox",
        r"user .{1,60} (?:was not found|does not exist)", r"destination addresses were unknown",
        r"no existe", r"unknown local part", r"not our customer", r"invalid mailbox",
        r"no mailbox here", r"mailbox .{0,60}does not exist",
        r"account (?:does not exist|not exist)",
    ]),
    ("filtered", [
        r"user refuses? to receive", r"message filtered", r"due to user rules", r"user reject",
        r"recipient is only accepting mail from", r"refused due to recipient preferences",
        r"blocked by the recipient", r"is not accepting any mail", r"account is protected by",
        r"recipient id refuse", r"restricted sms e-mail", r"filtered by",
    ]),
    ("requireptr", [
        r"\bptr\b", r"reverse (?:dns|lookup|hostname)", r"rdns", r"no (?:dns )?reverse",
        r"cannot find your hostname", r"client host .* (?:has no|without) (?:a )?(?:ptr|dns)",
        r"unresolvable (?:relay )?host ?name", r"ip name lookup failed",
        r"domain name lookup failed",
        r"cannot resolve your (?:address|hostname)", r"client host rejected: cannot find",
        r"hostname (?:does not|doesn'?t) resolve",
    ]),
    ("notcompliantrfc", [
        r"rfc ?5322", r"rfc ?2822", r"rfc ?822 compliant", r"not rfc compliant",
        r"multiple (?:addresses )?in from", r"header .*not compliant",
    ]),
    ("badreputation", [r"bad reputation", r"low reputation", r"poor reputation",
                       r"reputation (?:of|is)", r"ip reputation"]),
    ("rejected", [
        r"access denied \(in reply to mail from",
        r"all recipient addresses rejected : access denied",
        r"mailfrom domain is listed in", r"can'?t determine purported responsible address",
        r"send\w*.{0,40}blacklisted", r"fully qualified email address required",
        r"empty email address", r"sender domain (?:is empty|listed at)",
        r"has an outgoing mail suspension", r"too many spam complaints",
        r"domain is invalid\. please provide a valid from",
        r"sending this from a different address or alias", r"permission to post",
        r"sender (?:address )?(?:rejected|blocked|denied|not allowed|verify failed|domain)",
        r"domain of sender", r"sender (?:is )?(?:spammer|blacklisted|invalid)", r"invalid sender",
        r"(?:mail from|envelope sender) .*(?:rejected|denied|not allowed|does not exist)",
        r"returned mail not accepted", r"null sender", r"empty (?:envelope )?sender",
        r"administrative prohibition", r"unroutable sender", r"not a registered gateway user",
        r"sender not pre-approved", r"server does not accept mail from",
        r"your email address has been blacklisted", r"by non-member to a members-only list",
        r"you are not allowed to post", r"not (?:a )?member of this (?:mailing )?list",
        r"access denied \(in reply to mail from",
        r"sender verification", r"from address .* (?:rejected|denied|invalid)",
        r"mail from .* rejected", r"rejected by the sender", r"reject mail from",
    ]),
    ("hostunknown", [
        r"host (?:or domain name )?not found", r"host ?unknown", r"unknown host",
        r"domain (?:name )?(?:not found|does not exist|unknown)", r"unknown domain",
        r"no such domain", r"unrouteable mail domain", r"name or service not known",
        r"nxdomain", r"name server: .*: host not found",
        r"recipient domain .*(?:not exist|invalid)",
        r"invalid (?:recipient )?domain", r"domain .* (?:is not|isn'?t) (?:valid|a valid)",
        r"(?:dns|mx) (?:lookup )?(?:failed|error) for",
        r"illegal host/domain", r"host not known", r"unknown mail domain",
        r"mail for .* loops back to myself", r"unroutable domain", r"host \S+ not found",
        r"domain is not reachable", r"account or domain may not exist",
        r"after (?:end of data|rcpt to:?).{0,80}\b\S+\.\w+ does not exist",
        r"unrout(?:e)?able address",
    ]),
    ("spamdetected", [
        r"\bspam\b", r"\bube\b", r"\buce\b", r"junk mail", r"bulk (?:mail|e-?mail)",
        r"unsolicited", r"content rejected",
        r"message (?:content )?(?:was )?(?:considered|classified|identified|detected) as",
        r"blacklisted url", r"rejected by (?:.*)?anti-?spam", r"\bsurbl\b",
        r"message (?:looks|appears) (?:like|to be)", r"score", r"suspicious",
        r"our system has detected that this message is", r"likely (?:un)?solicited",
        r"rejected as spam", r"listed in (?:.*)?uribl", r"dangerous",
    ]),
    ("speeding", [r"(?<!connection )rate limit", r"receiving mail at a rate",
                  r"too many (?:e-?mails|messages) (?:sent|from)", r"sending rate",
                  r"rate of (?:incoming|email)", r"throttl", r"slow down"]),
    ("toomanyconn", [
        r"too many recipients", r"connection rate limit",
        r"too many (?:connections|sessions|concurrent)", r"connection limit",
                     r"too many (?:simultaneous|parallel)", r"temporarily deferred due to"]),
    ("blocked", [
        r"messages from \d+\.\d+\.\d+\.\d+ weren'?t sent", r"invalid ip for sending",
        r"blacklist", r"black list", r"blocklist", r"block list", r"\bdnsbl\b", r"\brbl\b",
        r"(?:\bip|ip address|host|connection|client|server) (?:has been |is |was )?"
        r"(?:blocked|banned|blacklisted|denied|rejected|refused)",
        r"client host rejected", r"(?:blocked|banned|listed) (?:by|at|in|on)",
        r"access denied", r"not allowed to (?:connect|send)", r"your (?:ip|network|server|host)",
        r"sorbs", r"spamcop", r"barracuda", r"\bblocked\b", r"connection refused",
        r"rejected because .* (?:ip|host)", r"\bhelo\b", r"\behlo\b",
        r"dynamic ip", r"dial-?up", r"residential", r"listed on", r"refused to talk",
        r"please use the smtp server of your isp", r"go away", r"rejecting open proxy",
    ]),
    ("policyviolation", [
        r"policy (?:reasons|rejection)", r"violat\w* (?:our|the) .*polic",
        r"rejected (?:for|due to) policy", r"content policy", r"prohibited (?:by|content)",
        r"not accepted for policy", r"email not accepted",
        r"attachment .*not allowed",
        r"banned (?:file|attachment|content)", r"contains .* (?:restricted|prohibited)",
        r"header error", r"header are not accepted", r"protocol violation",
        r"local policy violation",
        r"closed mailing list", r"denied by policy", r"rejected due to security policies",
        r"message given low priority", r"not subscribed to this group",
    ]),
    ("virusdetected", [r"virus", r"malware", r"infected", r"worm", r"trojan"]),
    ("securityerror", [
        r"unauthenticated senders? not allowed", r"smtp authentication",
        r"authentication (?:required|failed)", r"\bstarttls\b", r"\btls\b.*required",
        r"must (?:use|issue) (?:a )?starttls", r"encryption required", r"certificate",
        r"security (?:policy|violation|reasons)", r"not authorized", r"unauthorized",
        r"sender is not authenticated", r"you must authenticate",
    ]),
    ("systemerror", [
        r"could not load", r"service currently unavailable",
        r"system (?:error|failure|config)", r"server (?:error|configuration)", r"local error",
        r"internal (?:server )?error", r"configuration error",
        r"temporary (?:failure|error|problem)", r"unable to contact", r"i/o error",
        r"service (?:is )?(?:temporarily )?not available", r"not configured", r"conversion failed",
        r"ldap", r"timed? ?out while", r"remote server (?:is )?misconfigured", r"loops back",
    ]),
    ("networkerror", [*_NETWORK_PRECISE,
        r"network (?:error|is unreachable)", r"connection (?:timed out|reset|lost|closed|dropped)",
        r"could not connect", r"couldn'?t connect", r"unable to connect", r"timeout",
        r"dns (?:error|failure|lookup)", r"no route", r"lost connection", r"host is unreachable",
        r"temporary lookup failure", r"unreachable",
    ]),
    ("expired", [
        r"connection timed out", r"retry timeout exceeded",
        r"delivery failed \d+ attempts", r"failing for a long time", r"could not find a gateway",
        r"did not accept our requests to connect", r"host not reachable",
        r"delivery (?:time )?expired", r"retry time(?:out)? (?:not reached|exceeded)",
        r"(?:has been|was|were) (?:in the )?queued? (?:too long|for)",
        r"too long in (?:the )?queue",
        r"queue (?:too long|expired)", r"expired", r"giving up", r"gave up",
        r"could not be delivered (?:for|within) ", r"message (?:timed out|timeout)",
        r"been delayed", r"will be retried", r"delivery attempts? (?:will|have) ",
        r"not (?:been )?delivered (?:for|within|after)", r"has not been collected",
        r"maximum time", r"was not (?:able to be )?delivered (?:for|within)",
        r"retry timeout exceeded", r"delay", r"could not deliver .* (?:hours|days)",
        r"in the queue too long", r"unable to deliver .*(?:hours|days)",
    ]),
    ("contenterror", [
        r"8-?bit data", r"invalid (?:mime|header|character)", r"malformed", r"improper use",
        r"content (?:error|type)", r"too many (?:received|\"received\") headers",
        r"message header", r"mime", r"encoding", r"illegal attachment", r"header size exceeds",
        r"duplicate header",
    ]),
    ("systemfull", [r"disk full", r"(?:out of|insufficient) (?:disk|system) (?:space|storage)",
                    r"file system full", r"system (?:is )?full", r"mail system full"]),
    ("notaccept", [
        r"no (?:mx|mail exchanger)", r"couldn'?t find a mail exchanger",
        r"no smtp service",
        r"does not accept (?:any )?mail", r"doesn'?t accept mail",
        r"not accept(?:ing)? (?:any )?mail",
        r"null mx", r"no mail(?:boxes)? (?:hosts?|service)", r"mail(?:box)? (?:is )?not accepted",
        r"invalid domain for", r"this domain does not receive",
    ]),
    ("mailererror", [
        r"x-unix", r"command (?:died|failed|output)", r"mailer error", r"exit (?:code|status)",
        r"procmail", r"pipe to", r"\|/", r"program terminated", r"unknown mailer error",
        r"bad interpreter", r"command not found",
    ]),
    ("syntaxerror", [
        r"not implemented", r"\b50[1-4] (?:syntax|bad|command|invalid|unrecognized)",
        r"syntax error", r"unrecognized command", r"command unrecognized",
                     r"(?:bad|improper) sequence of commands", r"need rcpt", r"need mail"]),
]

RULES: list[tuple[str, re.Pattern[str]]] = [
    (reason, re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE))
    for reason, patterns in _RULES_SRC
]
RULE_BY_REASON: dict[str, re.Pattern[str]] = dict(RULES)

#: Enhanced status codes specific enough to name a reason on their own. Temporary (4.x.x) and
#: permanent (5.x.x) codes differ: ``4.7.1`` is a block, ``5.7.1`` a generic security refusal;
#: codes not listed (``5.5.0``, ``4.4.0``, ``5.4.1``, ...) name no reason, the text decides.
_STATUS_TABLE: dict[str, str] = {
    "userunknown": "5.1.0 5.1.1 5.1.3",
    "hostunknown": "5.1.2",
    "hasmoved": "4.1.6 5.1.6 5.7.17 5.7.18",
    "rejected": "4.1.7 4.1.8 5.1.7 5.1.8",
    "systemerror": "4.1.9 4.3.3 4.3.5 4.4.3 4.5.3 4.5.5 5.1.9 5.3.0 5.3.3 5.3.5 5.4.3 5.5.4 5.5.5",
    "suspend": "4.2.1 5.7.13",
    "mailboxfull": "4.2.2 5.2.2",
    "exceedlimit": "4.2.3 5.2.3",
    "filtered": "4.2.4 5.1.4 5.2.0 5.2.1 5.2.4",
    "systemfull": "4.3.1 4.4.5 5.3.1",
    "notaccept": "4.3.2 5.3.2 5.7.27",
    "expired": "4.4.1 4.4.7",
    "networkerror": "4.4.2 4.4.4 4.4.6 4.4.8 5.4.0",
    "contenterror": "4.6.2 4.6.5 5.6.1 5.6.2 5.6.3 5.6.5 5.6.6 5.6.7 5.6.8 5.6.9",
    "blocked": "4.7.1 4.7.2",
    "requireptr": "4.7.25 5.7.25",
    "securityerror": "4.7.5 4.7.6 4.7.7 4.7.12 4.7.15 5.7.0 5.7.1 5.7.2 5.7.3 5.7.4 5.7.5 5.7.6 "
                     "5.7.7 5.7.8 5.7.9 5.7.10 5.7.11 5.7.14 5.7.15 5.7.19",
    "mesgtoobig": "4.7.16 5.3.4 5.7.16",
    "authfailure": "4.7.24 4.7.26 5.7.20 5.7.21 5.7.22 5.7.23 5.7.24 5.7.26",
    "syntaxerror": "5.5.2 5.5.6",
    "toomanyconn": "5.5.3",
}
STATUS_REASON: dict[str, str] = {
    code: reason for reason, codes in _STATUS_TABLE.items() for code in codes.split()}

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})

#: First pass: reasons confirmed by status code or by their own phrases, most specific first.
_FIRST_PASS = ("mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying",
               "authfailure", "userunknown", "filtered", "requireptr", "notcompliantrfc",
               "badreputation", "rejected", "hostunknown", "spamdetected", "speeding",
               "toomanyconn", "blocked")
#: Second pass, when the first found nothing: broader phrases, still in priority order.
_SECOND_PASS = ("mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected",
                "policyviolation", "virusdetected", "norelaying", "securityerror",
                "systemerror", "expired", "networkerror", "suspend", "contenterror", "systemfull",
                "notaccept", "mailererror")
#: Status-derived reasons too vague to stand when the text says something sharper.
_VAGUE = frozenset({"", "userunknown", "undefined", "onhold", "systemerror", "securityerror",
                    "networkerror"})
#: Phrases that, next to an "unknown user" status, show the refusal was about something else.
_NOT_REALLY_UNKNOWN = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "filtered")
#: Status-derived reasons specific enough that another reason's wording does not override them.
_STRONG = (frozenset(_FIRST_PASS) - {"userunknown", "filtered"}) | {"contenterror"}
_BEFORE_DATA = frozenset({"CONN", "HELO", "EHLO", "MAIL", "RCPT", "STARTTLS", "AUTH"})

_COMMAND = re.compile(
    r"(?:in reply to|after|>>>|most progress was|smtp:)\s*(?:the\s+)?"
    r"(rcpt|mail|end of data|data|ehlo|helo|starttls|auth)\b", re.IGNORECASE)


def status_reason(status: str) -> str:
    """Name the reason an enhanced status code implies, or ``""`` when it implies none."""
    if len(status) < 5 or status[0] not in "245":
        return ""
    if status[0] == "2":
        return "delivered"
    if status in STATUS_REASON:
        return STATUS_REASON[status]
    # Vendor sub-codes under "addressing" (Microsoft's 5.1.351 etc.) still mean a bad mailbox.
    return "userunknown" if status.startswith("5.1.") and len(status) > 5 else ""


def text_reason(text: str) -> str:
    """The first reason whose phrases occur in ``text`` (rules in priority order), or ``""``."""
    if not text:
        return ""
    for reason, rule in RULES:
        if rule.search(text):
            return reason
    return ""


_RCPT_HINT = re.compile(r"rcpt[ _]to|does not like recipient|recipient address rejected",
                        re.IGNORECASE)
_DATA_HINT = re.compile(r"end of data|message (?:body|content)", re.IGNORECASE)


def smtp_command(text: str) -> str:
    """The SMTP command a refusal answered (``RCPT``, ``DATA``, ...), or ``""`` if unsaid."""
    match = _COMMAND.search(text)
    if match:
        word = match.group(1).upper()
        return "DATA" if word == "END OF DATA" else word
    if _RCPT_HINT.search(text):
        return "RCPT"
    if "refused to talk to me" in text:
        return "HELO"  # Postfix: the greeting or HELO was refused
    if _DATA_HINT.search(text):
        return "DATA"
    return ""


#: A remote server's reply quoted in a report: an SMTP code, or a provider's known reply wording.
_QUOTED_REPLY = re.compile(
    r"(?<![\d.#-])[45][0-5]\d(?:[ :-]|$)|error[_ ]code\W{0,3}[45]\d\d|"
    r"this user doesn'?t have an? \S+ account", re.IGNORECASE)


def _quotes_reply(text: str) -> bool:
    """Whether ``text`` quotes a remote server's SMTP reply code."""
    return _QUOTED_REPLY.search(text) is not None


def _matches(reason: str, text: str) -> bool:
    return RULE_BY_REASON[reason].search(text) is not None


def _confirmed(reason: str, by_status: str, text: str, command: str) -> bool:
    """Whether status and text together support ``reason`` (the first, strict pass)."""
    if reason == "userunknown":
        if by_status == "userunknown":
            return not any(_matches(r, text) for r in _NOT_REALLY_UNKNOWN)
        if by_status == "filtered":
            return command == "RCPT" and _matches("userunknown", text)
        if command == "" and by_status in ("", "onhold", "undefined"):
            # No command named: the MTA's own "unknown user" wording stands, but a remote
            # server's quoted 5xx reply of unknown timing reads as a filter (Sisimai's rule).
            return _matches("userunknown", text) and not _quotes_reply(text)
        return command == "RCPT" and _matches("userunknown", text)
    if reason == "filtered":
        if by_status not in ("filtered", "", "userunknown") and by_status in _FIRST_PASS:
            return False
        if by_status == "filtered":
            return _matches("userunknown", text) or _matches("filtered", text)
        if command in _BEFORE_DATA or by_status == "suspend":
            return False
        return _matches("filtered", text) or _matches("userunknown", text)
    if reason == "rejected":
        if by_status == "rejected":
            return True
        if command == "MAIL" and "access denied" in text.lower():
            return True  # refused at MAIL FROM: the sender was refused
        if command == "MAIL" or (command == "DATA" and by_status != "userunknown"):
            return _matches("rejected", text)
        return by_status in ("", "onhold", "undefined", "securityerror", "systemerror") and (
            _matches("rejected", text))
    if reason == "spamdetected" and command in _BEFORE_DATA and by_status != reason:
        return False  # content is read only after DATA: a refusal before it is not a spam verdict
    if by_status != reason and by_status in _STRONG and reason != "mailboxfull":
        return False  # a specific status code outranks another reason's wording
    return by_status == reason or _matches(reason, text)


#: The code prefix a multi-line SMTP reply repeats on every line ("550-5.7.1 ... 550-5.7.1 ...");
#: removed after the first so phrases broken across lines still read as one sentence.
_REPLY_PREFIX = re.compile(r"\b[245]\d\d-(?:[245]\.\d{1,3}\.\d{1,3}\s)?")


def _join_continuations(text: str) -> str:
    """Drop the repeats of a multi-line reply's line prefix (``550-5.7.1``), keeping the first."""
    first = _REPLY_PREFIX.search(text)
    if first is None:
        return text
    prefix = first.group(0).strip()
    head, tail = text[: first.end()], text[first.end():]
    for variant in (prefix, prefix.replace("-", " ", 1)):
        tail = tail.replace(f" <<< {variant} ", " ").replace(f" {variant} ", " ")
    return head + tail
#: Phrases that settle a reason before any status code: each names one precise condition.
_EARLY: list[tuple[str, re.Pattern[str]]] = [
    # A local delivery agent's own verdict (mail.local, maildrop, vpopmail, vmailmgr,
    # procmail): the mailbox is gone or full, whatever code the MTA wrapped it in.
    ("userunknown", re.compile(
        r"(?:mail\.local|maildrop|vdelivermail|vdeliver): .{0,20}(?:unknown user|"
        r"invalid user|user does not exist|(?:invalid or )?unknown virtual user)", re.IGNORECASE)),
    ("mailboxfull", re.compile(
        r"(?:mail\.local|maildrop|procmail|vdelivermail|dovecot): .{0,40}(?:quota exceeded|"
        r"over quota|mailbox (?:for user )?is full)", re.IGNORECASE)),
    ("notaccept", re.compile(
        r"null mx|doesn'?t receive e-?mail|does not accept mail|no mx (?:record )?found|"
        r"couldn'?t find (?:a|any) (?:mail exchanger|host)", re.IGNORECASE)),
    ("virusdetected", re.compile(
        r"virus (?:detected|found)|(?:contains|infected with) (?:a )?virus|malware detected",
        re.IGNORECASE)),
    ("notcompliantrfc", re.compile(r"multiple addresses in from:? header", re.IGNORECASE)),
    # Exchange's categorised NDR codes name the condition exactly.
    ("userunknown", re.compile(r"resolver\.adr\.(?:ex)?recipnotfound", re.IGNORECASE)),
    ("mesgtoobig", re.compile(r"resolver\.rst\.(?:recip|send)sizelimit", re.IGNORECASE)),
    ("expired", re.compile(r"queue\.expired", re.IGNORECASE)),
    ("mailererror", re.compile(
        r"procmail: |command output:|\"\|[^\"]*\"\.\.\.|mailer error\b|x-unix;", re.IGNORECASE)),
    ("policyviolation", re.compile(
        r"content presents a potential security issue|illegal attachment|"
        r"rejected for policy reasons|not accepted for policy reasons|"
        r"rejected due to security policies", re.IGNORECASE)),
]
#: Status-derived reasons the text's precise network wording overrides.
_NETWORK_OVER = frozenset({"expired", "", "systemerror"})
_NETWORK_RULE = re.compile("|".join(_NETWORK_PRECISE), re.IGNORECASE)
_MESSAGE_EXPIRED = re.compile(r"\bmessage expired\b", re.IGNORECASE)


def _early_reason(text: str, by_status: str) -> str:
    """A reason settled by unmistakable wording, or ``""``."""
    for reason, rule in _EARLY:
        if rule.search(text):
            return reason
    if by_status in _NETWORK_OVER and _NETWORK_RULE.search(text) and not _matches(
            "hostunknown", text):
        return "networkerror"
    if _MESSAGE_EXPIRED.search(text):
        return "expired"  # Exchange Online: "Message expired, <the last error>"
    return ""


def decide(status: str, diagnostic: str, action: str, command: str = "",
           diagnostic_type: str = "") -> str:
    """Combine status code, diagnostic text, SMTP command and Action into one reason.

    First pass: a reason whose status code or phrases confirm it, most specific first
    ("unknown user" only counts as such when refused at RCPT or coded ``X.1.1``; refused after
    DATA it is a content filter). Second pass: a specific status code stands; a vague one defers
    to broader phrases, then to the status class, the mailer type and the Action (a delay that
    says nothing else is ``expired``). Last resort: ``onhold`` when there was unreadable text,
    ``undefined`` when there was none.
    """
    if status.startswith("2."):
        return "delivered"
    diagnostic = _join_continuations(diagnostic)
    by_status = status_reason(status)
    early = _early_reason(diagnostic, by_status)
    if early:
        return early
    command = command or smtp_command(diagnostic)
    for reason in _FIRST_PASS:
        if _confirmed(reason, by_status, diagnostic, command):
            if reason == "hostunknown" and status.startswith("4."):
                return "networkerror"  # a lookup that may succeed later: not a dead domain
            return reason
    if by_status not in _VAGUE:
        return by_status
    for reason in _SECOND_PASS:
        if _matches(reason, diagnostic):
            return reason
    if by_status:
        return by_status
    if status[1:3] == ".6":
        return "contenterror"
    if status[1:3] == ".7":
        return "securityerror"
    if diagnostic_type in ("X-UNIX", "X-POSTFIX"):
        return "mailererror"
    if _matches("syntaxerror", diagnostic):
        return "syntaxerror"
    if action in ("delayed", "expired"):
        return "expired"
    if command in ("HELO", "EHLO"):
        return "blocked"
    return "onhold" if diagnostic.strip() else "undefined"


def bounce_type(reason: str, status: str, reply_code: int | None, action: str) -> str | None:
    """Hard or soft, per the platform's rule: a permanently unknown or moved address is hard,
    as is ``notaccept`` when the refusal was permanent (5xx); everything else is soft."""
    if reason in ("delivered", "feedback", "vacation"):
        return None
    if action == "delayed":
        return "soft"
    if reason in HARD_REASONS:
        return "hard"
    if reason == "notaccept":
        permanent = not status.startswith("4") and (reply_code is None or reply_code >= 500)
        return "hard" if permanent else "soft"
    return "soft"
