"""Phrase families: how MTAs and mailbox providers word each bounce reason.

One family per reason, each a list of regular-expression fragments matched against the
lower-cased, whitespace-squeezed diagnostic text. The families follow the wording catalogued by
Sisimai's reason definitions (``Sisimai::Reason::*``), regrouped here by what a phrase says
(``mailbox ... full``, ``over ... quota``) rather than listed sentence by sentence. Where two
parts of a phrase may be separated by a name or an address, the gap is bounded (``.{0,80}``) so
a fragment cannot match across unrelated sentences.

The families are data: :mod:`bounces.reasons` decides *when* each one may name the reason (the
status code and the SMTP command come first); this module only says whether the words are there.
Every family is compiled into one alternation, so a lookup is one regular-expression search.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

#: A gap between two parts of one phrase (a name, an address, a number).
_G = r".{0,80}?"

FAMILIES: dict[str, list[str]] = {
    "mailboxfull": [
        r"452 insufficient disk space", r"account disabled temporarly for exceeding receiving",
        r"boite du destinataire pleine", r"exceeded storage allocation", r"full mailbox",
        r"mailbox exceeds allowed size", r"mailbox size limit exceeded",
        r"mailbox would exceed maximum allowed storage", r"mailfolder is full",
        r"no space left on device", r"not sufficient disk space", r"quota violation for",
        r"too much mail data", r"user has exceeded quota, bouncing mail",
        r"user has too many messages on the server", r"user's space has been used up",
        rf"account is {_G}quota", rf"disk{_G}quota", rf"enough {_G}space",
        rf"mailbox {_G}exceeded{_G} limit", rf"mailbox {_G}full", rf"mailbox {_G}quota",
        rf"maildir {_G}quota", rf"over {_G}quota", rf"quota {_G}exceeded",
    ],
    "mesgtoobig": [
        r"exceeded maximum inbound message size", r"exceeded the maximum incoming message size",
        r"line limit exceeded", r"max message size exceeded", r"message file too big",
        r"message length exceeds administrative limit",
        r"message size exceeds (?:fixed limit|fixed maximum message size|maximum value)",
        r"message too big", r"message too large for this ", r"size limit",
        r"taille limite du message atteinte",
    ],
    "exceedlimit": [r"message header size exceeds limit", r"message too large"],
    "suspend": [
        r" is currently suspended", r" temporary locked", r"archived recipient",
        r"boite du destinataire archivee",
        r"email account that you tried to reach is (?:disabled|inactive)", r"has been suspended",
        r"inactive account", r"invalid/inactive user", r"is a deactivated mailbox",
        r"is unavailable: user is terminated", r"mailbox currently suspended",
        r"mailbox disabled", r"mailbox is frozen", r"mailbox unavailable or access denied",
        r"recipient rejected: temporarily inactive", r"recipient suspend the service",
        r"this account has been (?:disabled or discontinued|temporarily suspended)",
        r"this address no longer accepts mail", r"this mailbox is disabled",
        r"user or domain is disabled", r"user suspended",
        r"vdelivermail: account is locked email bounced",
    ],
    "hasmoved": [r" has been replaced by "],
    "norelaying": [
        r"as a relay", r"email address is not verified\.", r"insecure mail relay",
        r"is not permitted to relay through this server without authentication",
        r"mail server requires authentication when attempting to send to a non-local",
        r"no relaying", r"not a gateway", r"not allowed to relay through this machine",
        r"not an open relay, so get lost", r"not local host", r"relay access denied",
        r"relay denied", r"relay not permitted", r"relaying denied", r"relaying mail to ",
        r"specified domain is not allowed", r"that domain isn't in my list of allowed rcpthost",
        r"this system is not configured to relay mail", r"unable to relay ",
        r"we don't handle mail for",
    ],
    "authfailure": [
        r"//spf\.pobox\.com", r"bad spf records for", r"dmarc policy",
        r"doesn't meet the required authentication level",
        r"please inspect your spf settings", r"sender policy framework (?:\(spf\) fail|violation)",
        r"spf \(sender policy framework\) domain authentication fail", r"spf check: fail",
        r"the 5322\.from address doesn't meet the authentication requirements",
        rf" is not allowed to send mail\.{_G}_401",
        rf"is not allowed to send from <{_G} per it's spf record",
    ],
    "userunknown": [
        r"#5\.1\.1 bad address", r"550 address invalid", r"5\.1\.0 address rejected\.",
        r"address does not exist", r"address not present in directory", r"address unknown",
        r"can't accept user", r"does not exist\.", r"destination addresses were unknown",
        r"destination server rejected recipients",
        r"email address (?:does not exist|could not be found)",
        r"invalid (?:address|mailbox|recipient)", r"is not a known user",
        r"is not a valid mailbox", r"is not an active address at this host",
        r"mailbox (?:does not exist|invalid|is inactive|is unavailable|not present|not found"
        r"|unavaiable)",
        r"nessun utente simile in questo indirizzo", r"no account by that name here",
        r"no existe (?:dicha persona|ese usuario )", r"no mail box available for this user",
        r"no mailbox (?:by that name is currently available|found)",
        r"no such (?:address here|mailbox|person at this address|recipient|user)",
        r"no thank you rejected: account unavailable", r"no valid recipients, bye",
        r"not a valid (?:recipient|user here)", r"not a local address", r"not email addresses",
        r"recipient address rejected\. \(in reply to rcpt to command\)",
        r"recipient address rejected: (?:access denied|invalid user|invalid-recipient"
        r"|unknown user|userunknown)",
        r"recipient (?:does not exist|is not accepted|is not local|not exist|not found"
        r"|not ok|refuses to accept your mail|unknown)",
        r"requested action not taken: mailbox unavailable", r"resolver\.adr\.recipient ?notfound",
        r"sorry, (?:user unknown|badrcptto|no mailbox here by that name"
        r"|your envelope recipient has been denied)",
        r"that domain or user isn't in my list of allowed rcpthosts",
        r"the email account that you tried to reach does not exist",
        r"the following recipients was undeliverable", r"the user's email name is not found",
        r"there is no one at this address", r"this address no longer accepts mail",
        r"this email address is wrong or no longer valid",
        r"this recipient is (?:in my badrecipientto list|not in my validrcptto list)",
        r"this spectator does not exist", r"unknown (?:mailbox|recipient|user)",
        r"user (?:does not exist|missing home directory|not active|not exist|not found"
        r"|not known|unknown)",
        r"utilisateur inconnu !", r"vdeliver: invalid or unknown virtual user",
        r"weil die adresse nicht gefunden wurde oder keine e-mails empfangen kann",
        r"your envelope recipient is in my badrcptto list",
        rf"<{_G}> not found", rf"<{_G}>\.\.\. blocked by ",
        rf"account {_G} does not exist at the organization",
        r"adresse d au moins un destinataire invalide\. invalid recipient\..{0,40}41[68]",
        rf"bad{_G}recipient", rf"mailbox {_G}does not exist",
        rf"mailbox {_G}unavailable or access denied", rf"no {_G} in name directory",
        r"non-?existent user", rf"rcpt <{_G} does not exist", rf"rcpt \({_G}t exist ",
        rf"recipient {_G} was not found in",
        rf"recipient address rejected: user {_G} does not exist",
        rf"recipient address rejected: user unknown in {_G} table",
        rf"said: 550{_G}5\.1\.1 {_G} user unknown ", rf"this user doesn't have a {_G} account",
        r"unknown e-?mail address", r"unknown local-?part", rf"user {_G} was not found",
        rf"user {_G} does not exist", rf"user \({_G}\) unknown",
    ],
    "filtered": [
        r"account is protected by", r"bounced address", r"has restricted sms e-mail",
        r"is not accepting any mail", r"message filtered", r"message rejected due to user rules",
        r"not found recipient account", r"recipient id refuse to receive mail",
        r"recipient is only accepting mail from specific email addresses",
        r"refused due to recipient preferences", r"user not found",
        r"user refuses to receive this mail", r"user reject",
        r"you have been blocked by the recipient",
    ],
    "requireptr": [
        r"access denied\. ip name lookup failed",
        r"all mail servers must have a ptr record with a valid reverse dns entry",
        r"bad dns ptr resource record", r"cannot find your hostname",
        r"cannot resolve your address\.", r"fix reverse dns for ", r"ips with missing ptr records",
        r"no ptr record found\.", r"please get a custom reverse dns name from your isp",
        r"ptr record setup", r"reverse dns (?:failed|required)",
        r"sender ip reverse lookup rejected",
        r"the corresponding forward dns entry does not point to the sending ip",
        r"will not accept messages from servers/devices with no reverse dns",
        r"unresolvable relay host name",
        r"we do not accept mail from hosts with dynamic ip or generic dns ptr-records",
        rf"domain {_G} mismatches client ip", rf"dns lookup failure: {_G} try again later",
        rf"reverse dns lookup for host {_G} failed permanently",
        rf"server access {_G} forbidden by invalid rdns record of your mail server",
        rf"service permits {_G} unverifyable sending ips",
    ],
    "notcompliantrfc": [
        r"this message is not rfc 5322 compliant",
        r"support\.google\.com/mail/\?p=rfcmessagenoncompliant", rf" multiple {_G} header",
    ],
    "badreputation": [
        r"a poor email reputation score",
        r"has been temporarily rate limited due to ip reputation",
        r"ip/domain reputation problems", r"likely suspicious due to the very low reputation",
        r"none/bad reputation",
        r"temporarily deferred due to unexpected volume or user complaints",
        r"the sending mta's poor reputation",
    ],
    "contenterror": [
        r"duplicate header", r"header size exceeds maximum permitted",
        r"improper use of 8-bit data in message header",
        r"message header size, or recipient list, exceeds policy limit",
        r"message mime complexity exceeds the policy maximum",
        r"routing loop detected -- too many received: headers",
        r"this message contain (?:invalid mime headers|improperly-formatted binary content"
        r"|text that uses unnecessary base64 encoding)",
    ],
    "rejected": [
        r"access denied \((?:in reply to mail from command|sender blacklisted)\)",
        r"address rejected", r"administrative prohibition", r"batv (?:failed to verify|validation)",
        r"backscatter protection detected an invalid or expired email address",
        r"because the sender isn't on the recipient's list of senders",
        r"bogus mail from", r"can't determine purported responsible address",
        r"connections not accepted from servers without a valid sender domain",
        r"denied \[bouncedeny\]", r"denied by secumail valid-address-filter",
        r"delivery not authorized, message refused", r"does not exist e2110",
        r"domain of sender address ", r"email address is on senderfilterconfig list",
        r"emetteur invalide", r"empty envelope senders not allowed", r"envelope blocked - ",
        r"error: no third-party dsns",
        r"from: domain is invalid\. please provide a valid from:",
        r"fully qualified email address required", r"invalid domain, see <url:",
        r"invalid sender", r"is not a registered gateway user", r"mail from not owned by user",
        r"message rejected: email address is not verified", r"mx records for ",
        r"null sender is not allowed", r"recipient addresses rejected : access denied",
        r"recipient not accepted\. \(batv: no tag", r"returned mail not accepted here",
        r"rfc 1035 violation: recursive cname records for", r"rule imposed mailbox access for",
        r"sending this from a different address or alias using the ",
        r"sender address has been blacklisted", r"sender email address rejected",
        r"sender is in my black list", r"sender is spammer", r"sender not pre-approved",
        r"sender rejected", r"sender domain is empty", r"sender verify failed",
        r"sender was rejected", r"spam reporting address", r"syntax error: empty email address",
        r"the message has been rejected by batv defense",
        r"this server does not accept mail from", r"transaction failed unsigned dsn for",
        r"unroutable sender address", r"you are not allowed to post to this mailing list",
        r"you are sending to/from an address that has been blacklisted",
        r"your access to submit messages to this e-mail system has been rejected",
        r"your email address has been blacklisted",
    ],
    "hostunknown": [
        r"domain (?:does not exist|is not reachable|must exist)",
        r"host or domain name not found", r"host unknown", r"host unreachable",
        r"mail domain mentioned in email address is unknown", r"name or service not known",
        r"no such domain", r"recipient address rejected: unknown domain name",
        r"recipient domain must exist", r"the account or domain may not exist", r"unknown host",
        r"unroute?able address", rf"553 {_G} does not exist",
    ],
    "spamdetected": [
        r" - spam", r"//(?:www\.spamhaus\.org|dsbl\.org|mail\.163\.com)/help/help_spam_16\.htm",
        r"554 5\.7\.0 reject, id=", r"appears to be unsolicited", r"blacklisted url in message",
        r"block for spam", r"blocked by policy: no spam please", r"blocked by spamassassin",
        r"blocked for abuse\. see http://att\.net/blocks",
        r"cannot be forwarded because it was detected as spam",
        r"considered unsolicited bulk e-mail \(spam\) by our mail filters",
        r"content filter rejection",
        r"cyberoam anti spam engine has identified this email as a bulk email",
        r"denied due to spam list", r"high probability of spam",
        r"is classified as spam and is rejected", r"listed in work\.drbl\.imedia\.ru",
        r"the mail server detected your message as spam and has prevented delivery\.",
        r"mail content denied", r"may consider spam",
        r"message (?:considered as|contains) spam or virus", r"message content rejected",
        r"message detected as spam", r"message filtered", r"message looks like spam",
        r"message is being rejected as it seems to be a spam",
        r"message refused by (?:mailmarshal|trustwave seg) spamprofiler",
        r"message rejected (?:as spam|because of unacceptable content"
        r"|due to suspected spam content|for policy reasons)",
        r"message was rejected for possible spam/virus content",
        r"our email server thinks this email is spam",
        r"our system has detected that this message is ", r"probable spam",
        r"reject bulk\.advertising", r"rejected: spamassassin score ", r"rejected - bulk email",
        r"rejecting banned content", r"rejecting mail content",
        r"related to content with spam-like characteristics", r"sender domain listed at ",
        r"sending address not accepted due to spam filter",
        r"spam (?:blocked|check|content matched|detected|email|not accepted|refused"
        r"|rejection|score )",
        r"spam message rejected\.", r"spambouncer identified spam", r"spamming not allowed",
        r"too many spam complaints", r"too much spam\.",
        r"the email message was detected as spam",
        r"the message has been rejected by spam filtering engine",
        r"the message was rejected due to classification as bulk mail",
        r"the content of this message looked like spam", r"this message appears to be spam",
        r"this message has been (?:identified as spam|scored as spam with a probability)",
        r"this message was classified as spam",
        r"this message was rejected by recurrent pattern detection system",
        r"transaction failed spam message not queued", r"we dont accept spam",
        r"your email appears similar to spam we have received before",
        r"your email breaches local uribl policy", r"your email had spam-like ",
        r"your email (?:is considered|is probably|was detected as) spam",
        r"your message as spam and has prevented delivery",
        r"your message has been temporarily blocked by our filter",
        r"your message has been rejected because it appears to be spam",
        r"your message has triggered a spam block", r"your message may contain the spam contents",
        r"your message failed several antispam checks",
        rf"greylisted{_G} please try again in", rf"mail score \({_G} over ",
        rf"mail rejete\. mail rejected\. {_G}506",
        rf"our filters rate at and above {_G} percent probability of being spam",
        rf"rejected by {_G} \(spam\)", rf"rejected due to spam {_G}(?:classification|content)",
        rf"rule imposed as {_G} is blacklisted on", rf"spam {_G} exceeded",
        rf"this message scored {_G} spam points",
    ],
    "speeding": [
        r"mail sent from your ip address has been temporarily rate limited",
        r"please try again slower",
        r"receiving mail at a rate that prevents additional messages from being delivered",
    ],
    "toomanyconn": [
        r"all available ips are at maximum connection limit", r"connection rate limit exceeded",
        r"exceeds per-domain connection limit for", r"has exceeded the max emails per hour ",
        r"throttling failure: (?:daily message quota|maximum sending rate) exceeded",
        r"too many connections", r"too many concurrent smtp connections",
        r"too many errors from your ip", r"too many recipients",
        r"too many smtp sessions for this host", r"trop de connexions, ",
        r"we have already made numerous attempts to deliver this message",
    ],
    "blocked": [
        r" said: 550 blocked", r"//www\.spamcop\.net/bl\.", r"bad sender ip address",
        r"banned sending ip", r"blacklisted by", r"blocked using ", r"blocked - see http",
        r"dnsbl:attrbl", r"client host rejected: abus detecte gu_eib_0[24]",
        r"client host rejected: (?:may not be mail exchanger|was not authenticated)",
        r"confirm this mail server", r"connection dropped", r"connection refused by",
        r"connection reset by peer", r"connection was dropped by remote host",
        r"connections not accepted from ip addresses on spamhaus xbl",
        r"currently sending spam see: ", r"domain does not exist:",
        r"dynamic/zombied/spam ips blocked", r"error: no valid recipients from ",
        r"esmtp not accepting connections", r"extreme bad ip profile", r"go away",
        r"helo command rejected:", r"host network not allowed", r"hosts with dynamic ip",
        r"invalid ip for sending mail of domain", r"is in a black list",
        r"is not allowed to send mail from", r"mailfrom domain is listed in spamhaus",
        r"no access from mail server", r"no matches to nameserver query",
        r"not currently accepting mail from your ip",
        r"part of their network is on our block list",
        r"please use the smtp server of your isp", r"refused - see http",
        r"rejected - multi-blacklist",
        r"rejected because the sending mta or the sender has not passed validation",
        r"rejecting open proxy", r"sender ip address rejected",
        r"server access forbidden by your ip ",
        r"service not available, closing transmission channel",
        r"smtp error from remote mail server after initial connection:",
        r"sorry, that domain isn't in my list of allowed rcpthosts",
        r"sorry, your remotehost looks suspiciously like spammer",
        r"temporarily deferred due to unexpected volume or user complaints",
        r"to submit messages to this e-mail system has been rejected",
        r"too many spams from your ip",
        r"too many unwanted messages have been sent from the following ip address above",
        r"was blocked by ", r"we do not accept mail from dynamic ips",
        r"you are not allowed to connect", r"you are sending spam",
        r"your ip address is listed in the rbl", r"your network is temporary blacklisted",
        r"your server requires confirmation",
        rf"\({_G}@{_G}:blocked\)", rf"access from ip address {_G} blocked",
        rf"client host {_G} blocked using",
        rf"connections will not be accepted from {_G} because the ip is in spamhaus's list",
        rf"dnsbl:rbl {_G}>_is_blocked",
        rf"email blocked by {_G}(?:\.barracudacentral\.org|spamhaus)",
        rf"host {_G} refused to talk to me: {_G} blocked", rf"ip {_G} is blocked by earthlink",
        rf"is in an {_G}rbl on ", rf"mail server at {_G} is blocked", rf"mail from {_G} refused:",
        rf"mail from {_G} refused, see {_G}orbs", rf"message from {_G} rejected based on blacklist",
        rf"messages from {_G} temporarily deferred due to user complaints",
        rf"server ip {_G} listed as abusive", rf"sorry! your ip address{_G} is blocked by rbl",
        rf"the (?:domain|email|ip){_G} is blacklisted",
        rf"veuillez essayer plus tard\. service refused, please try later\. {_G}(?:103|510)",
        rf"your access ip{_G} has been rejected",
        rf"your sender's ip address is listed at {_G}\.abuseat\.org",
    ],
    "policyviolation": [
        r"an illegal attachment on your message",
        r"because the recipient is not accepting mail with ",
        r"by non-member to a members-only list", r"closed mailing list", r"denied by policy",
        r"email not accepted for policy reasons", r"email rejected due to security policies",
        r"header are not accepted", r"header error", r"local policy violation",
        r"message bounced due to organizational settings", r"message given low priority",
        r"message not accepted for policy reasons", r"message rejected due to local policy",
        r"messages with multiple addresses", r"rejected for policy reasons",
        r"protocol violation",
        r"the email address used to send your message is not subscribed to this group",
        r"the message was rejected by organization policy",
        r"this message was blocked because its content presents a potential",
        r"we do not accept messages containing images or other attachments",
        r"you're using a mass mailer",
        rf"you have exceeded the{_G}allowable number of posts without solving a captcha",
    ],
    "virusdetected": [
        r"it has a potentially executable attachment",
        r"the message was rejected because it contains prohibited virus or spam content",
        r"this form of attachment has been used by recent viruses or other malware",
        r"virus detected", r"virus phishing/malicious_url detected",
        r"your message was infected with a virus",
    ],
    "securityerror": [
        r"account not subscribed to ses", r"authentication credentials invalid",
        r"authentication failure", r"authentication required",
        r"authentication turned on in your email client",
        r"executable files are not allowed in compressed files", r"insecure mail relay",
        r"recipient address rejected: access denied",
        r"sorry, you don't authenticate or the domain isn't in my list of allowed rcpthosts",
        r"unauthenticated senders not allowed", r"verification failure",
        r"you are not authorized to send mail, authentication is required",
        r"starttls is required to send mail", r"tls required but not supported",
        rf"authentication failed; server {_G} said: ", rf"authentification invalide{_G}305",
        rf"authentification requise{_G}402", rf"domain {_G} is a dead domain",
        rf"user {_G} is not authorized to perform ses:sendrawemail on resource",
    ],
    "systemerror": [
        r"aliasing/forwarding loop broken", r"can't create user output file",
        r"could not load drd for domain", r"internal error reading data",
        r"internal server error: operation now in progress", r"interrupted system call",
        r"it encountered an error while being processed", r"it would create a mail loop",
        r"local configuration error", r"local error in processing",
        r"loop was found in the mail exchanger", r"loops back to myself",
        r"mail system configuration error", r"queue file write error",
        r"recipient deferred because there is no mdb", r"remote server is misconfigured",
        r"server configuration error", r"service currently unavailable", r"system config error",
        r"temporary local problem", r"timeout waiting for input", r"transaction failed ",
        rf"unable to connect {_G}daemon",
    ],
    "networkerror": [
        r"could not connect and send the mail to",
        r"dns records for the destination computer could not be found",
        r"hop count exceeded - possible mail loop", r"host is unreachable",
        r"host name lookup failure", r"host not found, try again", r"mail forwarding loop for ",
        r"malformed (?:or unexpected )?name server reply",
        r"maximum forwarding loop count exceeded", r"message looping",
        r"message probably in a routing loop", r"no route to host", r"too many hops",
        r"unable to resolve route ", r"unrouteable mail domain",
    ],
    "expired": [
        r"connection timed out", r"could not find a gateway for",
        r"delivery attempts will continue to be", r"delivery (?:time )?expired",
        r"failed to deliver to domain ", r"giving up on", r"have been failing for a long time",
        r"has been delayed", r"it has not been collected after",
        r"message expired (?:after sitting in queue for|, cannot connect to remote server"
        r"|, connection refulsed)",
        r"message timed out",
        r"retry time not reached for any host after a long failure period",
        r"server did not respond", r"this message has been in the queue too long",
        r"unable to deliver message after multiple retries",
        r"was not reachable within the allowed queue period",
        r"your message could not be delivered for more than",
        rf"could not be delivered for{_G} days",
    ],
    "systemfull": [
        r"mail system full",
        r"requested mail action aborted: exceeded storage allocation",
    ],
    "notaccept": [
        r"does not accept mail \(nullmx\)", r"host/domain does not accept mail",
        r"host does not accept mail", r"mail receiving disabled",
        r"name server: \.: host not found", r"no mx record found for domain=",
        r"no route for current request", r"smtp protocol returned a permanent error",
    ],
    "mailererror": [
        r" \|\| exit ", r"procmail: ", r"bin/procmail", r"bin/maidrop", r"command failed: ",
        r"command died with status ", r"command output:", r"mailer error", r"pipe to \|/",
        r"x-unix; ",
    ],
    "vacation": [
        r"i am away on vacation", r"i am away until", r"i am out of the office",
        r"i will be traveling for work on",
    ],
}


def _compile(fragments: list[str]) -> Callable[[str], re.Match[str] | None]:
    """One alternation for a family: a single regex scan decides it."""
    return re.compile("|".join(f"(?:{f})" for f in fragments), re.DOTALL).search


#: reason -> a search function over lower-cased text.
_SEARCH: dict[str, Callable[[str], re.Match[str] | None]] = {
    reason: _compile(fragments) for reason, fragments in FAMILIES.items()}


@lru_cache(maxsize=2048)
def says(reason: str, text: str) -> bool:
    """Whether ``text`` (lower-cased) words ``reason`` as one of its family's phrases.

    Memoised: the probes ask about the same diagnostic several times (an "unknown user" probe
    first checks the relaying, blocking and full-mailbox families the later probes check too).
    """
    search = _SEARCH.get(reason)
    return bool(text) and search is not None and search(text) is not None


#: Phrases that exclude :data:`FAMILIES` ``["rejected"]``: a refused *recipient*, not a sender.
_NOT_REJECTED = re.compile(
    r"5\.1\.0 address rejected|recipient address rejected|sender ip address rejected")


def says_rejected(text: str) -> bool:
    """The sender-refusal family, minus the phrases that name the recipient or the IP."""
    return _NOT_REJECTED.search(text) is None and says("rejected", text)
