"""Natural warmup mail: subjects and bodies from a built-in corpus, and the message bytes.

Plain business sentences, varied per message from a generator seeded by the message's id
(a retried send composes the same bytes). No lorem ipsum, no links, no tracking pixels, no
List-Unsubscribe (this is person-to-person mail), one text/plain part. A reply quotes the
subject with ``Re:`` and carries In-Reply-To and References, so clients and the receiving
side thread it. Pure: no I/O.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass

SUBJECTS = (
    "Quick question about next week",
    "Notes from our call",
    "Follow-up on the proposal",
    "Schedule for the review",
    "Thoughts on the quarterly plan",
    "Agenda for Thursday",
    "Update on the project timeline",
    "Checking in",
    "Draft for your comments",
    "Meeting notes and next steps",
    "Question about the invoice",
    "Planning the workshop",
    "Feedback on the draft",
    "Catching up",
    "Travel dates for the visit",
    "Small change to the plan",
)
GREETINGS = ("Hi", "Hello", "Good morning", "Hi there", "Hey")
OPENERS = (
    "I hope your week is going well.",
    "Thanks again for the time on our last call.",
    "I wanted to follow up on what we discussed.",
    "I had a look at the notes you sent over.",
    "Just a short note before the weekend.",
    "I was going through the plan this morning.",
)
MIDDLES = (
    "Could we move the review to Thursday afternoon?",
    "The team agreed on the first two points, and the third needs one more pass.",
    "I think the timeline works if we keep the scope as it is.",
    "Let me know if the numbers in the second section look right to you.",
    "We can start with the smaller items and leave the rest for next month.",
    "I added a few comments to the draft, mostly on wording.",
    "The budget looks fine, though travel may come in a little higher.",
    "Would it help if I prepared a short summary for the others?",
    "I spoke with the finance team and they are happy with the estimate.",
    "The delivery date is still on track from our side.",
)
CLOSERS = (
    "Talk soon.",
    "Thanks in advance.",
    "Let me know what you think.",
    "Happy to discuss whenever suits you.",
    "Have a good day.",
)
SIGN_OFFS = ("Best", "Regards", "Thanks", "Cheers", "Kind regards")
REPLY_LINES = (
    "Thanks, that works for me.",
    "Sounds good, let us go with that.",
    "Got it, thanks for the update.",
    "That makes sense. I will check with the team and come back to you.",
    "Thursday is fine on my side.",
    "Thanks for sending this over, I will read it today.",
    "Agreed on all points.",
)


@dataclass(frozen=True)
class Draft:
    """What to send: addresses, identities, subject and text."""

    from_email: str
    to_email: str
    message_id: str
    subject: str
    text: str
    in_reply_to: str | None = None
    references: str | None = None


def _name(address: str) -> str:
    local = address.partition("@")[0]
    first = local.replace(".", " ").replace("_", " ").replace("-", " ").split()
    return first[0].capitalize() if first and first[0].isalpha() else ""


def new_message(seed: str, from_email: str, to_email: str, message_id: str) -> Draft:
    """A new conversation's first message."""
    rng = random.Random(seed)
    who = _name(to_email)
    lines = [
        f"{rng.choice(GREETINGS)}{' ' + who if who else ''},",
        "",
        rng.choice(OPENERS),
        " ".join(rng.sample(MIDDLES, 2)),
        "",
        rng.choice(CLOSERS),
        "",
        f"{rng.choice(SIGN_OFFS)},",
        _name(from_email) or from_email.partition("@")[0],
    ]
    return Draft(from_email, to_email, message_id, rng.choice(SUBJECTS), "\n".join(lines) + "\n")


def reply_to(
    seed: str,
    from_email: str,
    to_email: str,
    message_id: str,
    subject: str,
    parent_id: str,
    parent_references: str | None,
) -> Draft:
    """A threaded reply to ``parent_id`` (References: the parent's, then the parent)."""
    rng = random.Random(seed)
    who = _name(to_email)
    lines = [
        f"{rng.choice(GREETINGS)}{' ' + who if who else ''},",
        "",
        rng.choice(REPLY_LINES),
        "",
        f"{rng.choice(SIGN_OFFS)},",
        _name(from_email) or from_email.partition("@")[0],
    ]
    refs = " ".join(x for x in ((parent_references or "").strip(), parent_id) if x)
    subj = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    return Draft(from_email, to_email, message_id, subj, "\n".join(lines) + "\n", parent_id, refs)


def render(draft: Draft, *, date: float) -> bytes:
    """The message bytes (CRLF, 7bit text/plain), ready to be DKIM-signed and sent."""
    headers = [
        ("From", draft.from_email),
        ("To", draft.to_email),
        ("Subject", draft.subject),
        ("Date", email.utils.formatdate(date, usegmt=True)),
        ("Message-ID", draft.message_id),
    ]
    if draft.in_reply_to:
        headers.append(("In-Reply-To", draft.in_reply_to))
        headers.append(("References", draft.references or draft.in_reply_to))
    headers += [
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "7bit"),
    ]
    head = "".join(f"{k}: {' '.join(v.split())}\r\n" for k, v in headers)
    body = draft.text.replace("\r\n", "\n").replace("\n", "\r\n")
    return (head + "\r\n" + body).encode()
