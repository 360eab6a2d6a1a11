"""The exceptions of ``delivery/``, and where third-party errors are translated.

::

    DeliveryError
    ├── PermanentError          the send can never succeed as asked (bad payload, missing
    │   │                       template variable, unknown campaign, no SMTP route): the job
    │   │                       is dead-lettered, nothing is sent
    │   ├── PayloadError        the job payload itself is wrong
    │   ├── RenderError         a template does not render (names the missing variable)
    │   └── RouteError          no SMTP endpoint or credentials for the sending account
    ├── TransportError          the SMTP conversation broke before a reply could be read
    │                           (refused, timed out, dropped, TLS failed): temporary,
    │                           the connection is discarded and the send retried
    └── SignerError             the DKIM signer process failed or is gone: temporary, the
                                job is retried (the signer restarts on the next signature)

A *reply* from the server (2xx/4xx/5xx) is not an exception here: the SMTP client
(:mod:`delivery.smtpclient`) returns it as a :class:`~delivery.reply.SmtpReply` value, so the
policy (:func:`delivery.reply.classify`) decides sent / retry / failed per recipient. That
client is where socket, TLS, timeout and malformed-reply errors are translated into
:class:`TransportError` (``tests/delivery/test_smtpclient.py`` drives each of them).
"""

from __future__ import annotations


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


class SignerError(DeliveryError):
    """The DKIM signer process could not sign (it died, or refused): temporary."""
