"""The exceptions of ``delivery/``, and where third-party errors are translated.

::

    DeliveryError
    ├── PermanentError          the send can never succeed as asked (bad payload, missing
    │   │                       template variable, unknown campaign, no SMTP route): the job
    │   │                       is dead-lettered, nothing is sent
    │   ├── PayloadError        the job payload itself is wrong
    │   ├── RenderError         a template does not render (names the missing variable)
    │   └── RouteError          no SMTP endpoint or credentials for the sending account
    └── TransportError          the SMTP conversation broke before a reply could be read
                                (refused, timed out, dropped, TLS failed): temporary,
                                the connection is discarded and the send retried

A *reply* from the server (2xx/4xx/5xx) is not an exception here: :func:`translate_smtp`
turns aiosmtplib's response exceptions into :class:`~delivery.reply.SmtpReply` values, so
the policy (:func:`delivery.reply.classify`) decides sent / retry / failed per recipient.
Every aiosmtplib exception class is mapped (``tests/delivery/test_reply.py`` checks that
the mapping is complete).
"""

from __future__ import annotations

import ssl

import aiosmtplib

from delivery.reply import SmtpReply


class DeliveryError(Exception):
    """Base of every error raised by ``delivery/``."""


class PermanentError(DeliveryError):
    """The send can never succeed as asked; retrying changes nothing."""


class PayloadError(PermanentError):
    """The email-sending job payload is malformed or names nothing that exists."""


class RenderError(PermanentError):
    """A subject or body template does not render (a missing variable, a syntax error)."""


class RouteError(PermanentError):
    """The sending account has no SMTP endpoint and no relay is configured."""


class TransportError(DeliveryError):
    """The SMTP connection failed without a usable reply: temporary, retried."""


# Response exceptions carry the server's reply: they become values, not errors.
_RESPONSE_TYPES: tuple[type[aiosmtplib.SMTPResponseException], ...] = (
    aiosmtplib.SMTPConnectResponseError,
    aiosmtplib.SMTPHeloError,
    aiosmtplib.SMTPDataError,
    aiosmtplib.SMTPAuthenticationError,
    aiosmtplib.SMTPSenderRefused,
    aiosmtplib.SMTPRecipientRefused,
    aiosmtplib.SMTPResponseException,
)
# Failures without a reply: the transport is unusable.
_TRANSPORT_TYPES: tuple[type[aiosmtplib.SMTPException], ...] = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectTimeoutError,
    aiosmtplib.SMTPReadTimeoutError,
    aiosmtplib.SMTPNotSupported,
    aiosmtplib.SMTPException,  # anything else without a reply
)
MAPPED_SMTP_ERRORS = frozenset(
    _RESPONSE_TYPES + _TRANSPORT_TYPES + (aiosmtplib.SMTPRecipientsRefused,)
)


def translate_smtp(exc: BaseException) -> SmtpReply | TransportError:
    """The server's reply inside an aiosmtplib error, or a :class:`TransportError`.

    ``SMTPRecipientsRefused`` (every recipient refused) yields the first refusal; OS, TLS
    and timeout errors raised below aiosmtplib are transport errors too.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        if exc.recipients:
            return translate_smtp(exc.recipients[0])
        return TransportError("all recipients refused without a reply")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SmtpReply.parse(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPException | ssl.SSLError | OSError | TimeoutError):
        return TransportError(f"{type(exc).__name__}: {exc}"[:500])
    raise TypeError(f"not an SMTP transport error: {type(exc).__name__}")
