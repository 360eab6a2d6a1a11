"""One send, start to finish: the ``queue:email-sending*`` job turned into an SMTP
transaction and a delivery row. The steps, in order::

    payload → tenant, campaign, template, account, contact (tenant-scoped)
            → render (sandboxed; a missing variable is permanent)
            → rate limits (account minute/hour/day with warmup ramp, domain minute and
              concurrency, tenant minute): over a limit → DeferJob until it fits
            → claim the delivery row: ``sending``, or ``suppressed`` / ``expired``, or
              already final (a re-run) → nothing is sent
            → compose (VERP return path, Message-ID, List-Unsubscribe) → DKIM sign
            → SMTP through the pool → classify the reply → record the outcome
              2xx sent · 4xx/transport deferred and retried (the server's "try again in N
              seconds" as a DeferJob) · 5xx failed + a queue:bounce:process job

No double sends: the row is ``sending`` before the transaction and a run finding it final
sends nothing. A run finding it ``sending`` and claimed less than ``delivery_claim_lease_s``
ago is deferred until that claim lapses: the other run may be alive and mid-transaction (a
worker whose loop stalled past its heartbeat is reaped and its job handed out again while
it still sends), and the lease outlasts any transaction its timeouts allow. The one window
left is a process dying after the server's 250 and before the ``sent`` commit: that
delivery is still ``sending`` and is sent again when its job is reaped and re-run, once the
claim lease has lapsed. At most the sends in flight at the crash (``delivery_concurrency``
per worker: a send whose ``sent`` update waits in the outcome batch still holds its slot)
can be duplicated, i.e. at most the rows left ``sending``; each such duplicate carries the
same Message-ID (it derives from the delivery id), so receivers and threading see one
message.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery.compose import Envelope, compose, domain_of, message_id_for
from delivery.dkimsign import DkimKey, DkimKeyError, sign_message_offloaded
from delivery.errors import PayloadError, RouteError, TransportError
from delivery.metrics import METRICS, DeliveryMetrics
from delivery.payload import SendRequest, parse_request
from delivery.pool import Endpoint, SmtpPool
from delivery.ratelimit import Admission, RateLimiter, Window
from delivery.render import Rendered, Renderer
from delivery.reply import SmtpReply, classify
from delivery.signer import SignerProcess
from delivery.store import (
    Account,
    Claim,
    ContextStore,
    DeliveryStore,
    NewDelivery,
    delivery_id_for,
)
from gateway.app import App
from gateway.jobs import DeferJob
from gateway.jobs.contracts import BOUNCE, BouncePayload, EmailSendPayload, encode_job
from gateway.jobs.envelope import Job
from gateway.logs import bind
from gateway.secretkey import CredentialBox
from gateway.services import Service, Services
from gateway.verp import Verp

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
# How long a send of a paused campaign waits before it looks at the campaign again.
PAUSED_RECHECK_S = 300.0


@dataclass(frozen=True)
class Route:
    """Which provider sends (``account``, ``tenant_relay``, ``relay``, ``fallback``; stored
    in ``email_deliveries.provider``) and through which endpoint."""

    provider: str
    endpoint: Endpoint


class SendDeferred(Exception):
    """A temporary failure (4xx, dropped connection): the job is retried with backoff."""


def parse_domain_limits(text: str) -> dict[str, tuple[int, int]]:
    """``gmail.com=600/10,...`` → {domain: (per_minute, concurrency)}."""
    out: dict[str, tuple[int, int]] = {}
    for item in text.split(","):
        if item.strip():
            domain, _, rest = item.strip().partition("=")
            per_min, _, conc = rest.partition("/")
            out[domain.strip().lower()] = (int(per_min), int(conc))
    return out


def load_file_keys(spec: str) -> dict[tuple[str, str], list[DkimKey]]:
    """``tenant:domain:selector:/path.pem,...`` → parsed keys by (tenant, domain), read
    once, at start. A file key is bound to the one tenant whose mail it signs (issue 16):
    it is never used for another tenant's mail, even from the same domain."""
    keys: dict[tuple[str, str], list[DkimKey]] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        parts = item.strip().split(":", 3)
        if len(parts) != 4 or not parts[0].strip() or "." not in parts[1]:
            raise DkimKeyError(
                f"delivery_dkim_keys entry {item!r} is not tenant:domain:selector:path "
                "(a key file is bound to the tenant whose mail it signs)"
            )
        tenant, domain, selector, path = parts
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise DkimKeyError(f"DKIM key file {path}: {exc.strerror}") from None
        key = DkimKey.from_pem(domain.strip().lower(), selector.strip(), pem)
        keys.setdefault((tenant.strip(), key.domain), []).append(key)
    return keys


@dataclass(frozen=True)
class Outcome:
    """What one run did (the job's result)."""

    delivery_id: str
    status: str
    smtp_code: int | None = None
    response: str | None = None

    def as_result(self) -> dict[str, Any]:
        return {
            "success": self.status in ("sent", "suppressed"),
            "delivery_id": self.delivery_id,
            "status": self.status,
            "smtp_code": self.smtp_code,
            "response": self.response,
        }


class Sender:
    """Everything one process needs to send: stores, renderer, limiter, pool, keys."""

    def __init__(
        self, app: App, metrics: DeliveryMetrics, *, clock: Callable[[], float] = time.time
    ):
        s = app.settings
        self.app = app
        self.settings = s
        self.clock = clock
        self.contexts = ContextStore(app.db)
        self.deliveries = DeliveryStore(app.db, s.delivery_claim_lease_s)
        self.renderer = Renderer()
        self.verp = Verp(app.secret_key)
        self.box = CredentialBox(app.secret_key)
        self.limiter = RateLimiter(app.redis, clock)
        tls = ssl.create_default_context(
            cafile=str(s.delivery_tls_ca_file) if s.delivery_tls_ca_file else None
        )
        self.pool = SmtpPool(
            helo_name=s.delivery_helo_name or None,
            tls_context=tls,
            max_per_endpoint=s.delivery_pool_max_per_endpoint,
            max_messages=s.delivery_pool_max_messages,
            idle_s=s.delivery_pool_idle_s,
            connect_timeout_s=s.delivery_connect_timeout_s,
            command_timeout_s=s.delivery_command_timeout_s,
        )
        self.file_keys = load_file_keys(s.delivery_dkim_keys)
        self.domain_limits = parse_domain_limits(s.delivery_domain_limits)
        self.metrics = metrics
        self.metrics.pool_connections.set_function(lambda: self.pool.open_connections)
        self._db_keys: dict[bytes, DkimKey] = {}
        # Since when each primary endpoint has been unreachable (fallback relay policy).
        self._down_since: dict[tuple[str, int, str, str, str], float] = {}
        # RSA signatures in a helper process (started with the first one): see signer.py.
        self._signer = SignerProcess() if s.delivery_dkim_signer_process else None

    # -- the job --------------------------------------------------------------------------

    async def handle(self, job: Job, payload: EmailSendPayload) -> dict[str, Any]:
        request = parse_request(payload)
        tenant = request.tenant_id or await self.contexts.tenant_of_campaign(
            request.campaign_id or ""
        )
        with bind(tenant_id=tenant, campaign_id=request.campaign_id):
            outcome = await self._send(job, tenant, request)
        return outcome.as_result()

    async def _send(self, job: Job, tenant: str, request: SendRequest) -> Outcome:
        campaign = (
            await self.contexts.campaign(tenant, request.campaign_id)
            if request.campaign_id
            else None
        )
        template_id = request.template_id or (campaign.template_id if campaign else None)
        account_id = request.email_account_id or (campaign.email_account_id if campaign else None)
        if template_id is None:
            raise PayloadError("no template: the payload names none and the campaign has none")
        if account_id is None:
            raise PayloadError(
                "no sending account: the payload names none and the campaign has none"
            )
        if campaign is not None:
            stopped = await self._campaign_stopped(job, tenant, campaign.id)
            if stopped is not None:
                return stopped
        template = await self.contexts.template(tenant, template_id)
        account = await self.contexts.account(tenant, account_id)
        if not account.enabled:
            raise PayloadError(f"email account {account.id!r} is disabled")
        held = await self.contexts.pause(tenant, account.id, request.campaign_id)
        if held is not None:
            # A deliverability guard paused the account or campaign: hold the send (kept,
            # not lost) until `mailgate accounts|campaigns resume` brings it forward.
            self.metrics.deliveries.labels("paused").inc()
            raise DeferJob(
                self.settings.guard_hold_s, f"{held.scope} {held.subject_id} paused: {held.reason}"
            )
        contact = await self.contexts.contact(tenant, request.recipient_id, request.recipient_email)
        variables: dict[str, Any] = dict(contact.fields) if contact else {}
        variables.update(
            email=request.recipient_email,
            name=request.recipient_name or (contact.name if contact else None),
        )
        if variables["name"] is None:
            del variables["name"]
        variables.update(request.variables)
        content = self.renderer.render(template.subject, template.html, template.text, variables)
        from_email = (campaign.from_email if campaign else None) or account.address
        await self.check_from_domain(tenant, account, from_email)
        new = NewDelivery(
            tenant_id=tenant,
            idempotency_key=job.idempotency_key or job.id,
            campaign_id=request.campaign_id,
            recipient_id=request.recipient_id or (contact.id if contact else None),
            recipient_email=request.recipient_email,
            email_account_id=account.id,
            job_id=job.id,
        )
        expired = self._expired(job)
        admission = Admission(0.0)
        if not expired:
            admission = await self._admit(tenant, account, request.recipient_email)
        try:
            claim = await self.deliveries.claim(new, expired=expired)
            with bind(delivery_id=claim.delivery_id):
                if not claim.send and claim.held_for_s > 0:
                    # Another run claimed it moments ago and may be in its SMTP transaction
                    # (a worker reaped while alive): wait for that claim to lapse.
                    self.metrics.deliveries.labels("held").inc()
                    raise DeferJob(claim.held_for_s + 1.0, "delivery held by another run")
                if not claim.send:
                    return await self._not_sending(claim, request, tenant)
                return await self._transact(
                    job, tenant, request, account, campaign, from_email, content, claim
                )
        finally:
            await self.limiter.release(admission)

    async def _campaign_stopped(self, job: Job, tenant: str, campaign_id: str) -> Outcome | None:
        """A send queued for a cancelled campaign is skipped (no delivery row, nothing
        sent); one for a paused campaign waits (deferred, no attempt counted) until the
        campaign is resumed or cancelled."""
        status = await self.contexts.campaign_status(tenant, campaign_id)
        if status == "paused":
            self.metrics.deliveries.labels("paused").inc()
            raise DeferJob(PAUSED_RECHECK_S, "campaign paused")
        if status == "cancelled":
            self.metrics.deliveries.labels("cancelled").inc()
            key = job.idempotency_key or job.id
            return Outcome(delivery_id_for(tenant, key), "cancelled")
        return None

    def _expired(self, job: Job) -> bool:
        if not job.created_at:
            return False
        try:
            created = dt.datetime.fromisoformat(job.created_at.replace("Z", "+00:00"))
        except ValueError:
            return False
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        return self.clock() - created.timestamp() > self.settings.delivery_max_age_s

    # -- rate limits ------------------------------------------------------------------------

    async def _admit(self, tenant: str, account: Account, recipient: str) -> Admission:
        s = self.settings
        domain = domain_of(recipient)
        per_day = s.delivery_account_per_day
        warmup = await self.contexts.warmup(tenant, account.id)
        if warmup is not None:
            cap = warmup.cap(dt.datetime.fromtimestamp(self.clock(), dt.UTC).date())
            if cap <= 0:
                self.metrics.rate_limited.labels("account").inc()
                raise DeferJob(_seconds_to_midnight(self.clock()), "warmup: no sends today")
            per_day = min(per_day, cap) if per_day else cap
        dom_min, dom_conc = self.domain_limits.get(
            domain, (s.delivery_domain_per_minute, s.delivery_domain_concurrency)
        )
        acct = f"{tenant}:{account.id}"
        windows = [
            Window("account", acct, s.delivery_account_per_minute, 60.0),
            Window("account", acct, s.delivery_account_per_hour, 3600.0),
            Window("account", acct, per_day, 86400.0),
            Window("domain", domain, dom_min, 60.0),
            Window("tenant", tenant, s.delivery_tenant_per_minute, 60.0),
        ]
        lease_s = s.delivery_connect_timeout_s + 3 * s.delivery_command_timeout_s
        admission = await self.limiter.acquire(windows, (domain, dom_conc), lease_s=lease_s)
        if not admission.admitted:
            scope = (admission.limit or "conc").split(":", 1)[0]
            self.metrics.rate_limited.labels(scope).inc()
            raise DeferJob(admission.wait_s, f"rate limited by {admission.limit}")
        return admission

    # -- the transaction --------------------------------------------------------------------

    async def _transact(
        self,
        job: Job,
        tenant: str,
        request: SendRequest,
        account: Account,
        campaign: Any,
        from_email: str,
        content: Rendered,
        claim: Claim,
    ) -> Outcome:
        sending_domain = domain_of(from_email)
        bounce_domains = self.settings.bounce_domains
        token = self.verp.token(claim.delivery_id)
        unsubscribe_mailto, unsubscribe_url = self.unsubscribe_links(sending_domain, token)
        envelope = Envelope(
            from_email=from_email,
            from_name=campaign.from_name if campaign else None,
            to_email=request.recipient_email,
            to_name=request.recipient_name,
            reply_to=campaign.reply_to if campaign else None,
            return_path=(
                self.verp.address(claim.delivery_id, bounce_domains[0], token)
                if bounce_domains
                else from_email
            ),
            message_id=message_id_for(claim.delivery_id, sending_domain),
            unsubscribe_mailto=unsubscribe_mailto,
            unsubscribe_url=unsubscribe_url,
        )
        try:
            message = compose(envelope, content, date=self.clock())
            keys = await self.keys_for(tenant, sending_domain)
            if keys:
                message = await sign_message_offloaded(
                    message, keys, self._signer, now=self.clock()
                )
            route = await self.route_for(tenant, account)
        except Exception as exc:
            # Nothing was sent: give the claim back, so the retry (or a replay of the dead
            # letter) need not wait for the claim lease.
            await self.deliveries.record(
                tenant, claim.delivery_id, "deferred", response=f"not sent: {exc}"[:500]
            )
            raise
        t0 = time.perf_counter()
        try:
            reply, route = await self._send_routed(
                route, envelope.return_path, request.recipient_email, message
            )
        except TransportError as exc:
            self.metrics.send_seconds.observe(time.perf_counter() - t0)
            return await self._temporary(job, tenant, claim, None, str(exc), None)
        self.metrics.send_seconds.observe(time.perf_counter() - t0)
        disposition = classify(reply)
        if disposition.result == "sent":
            await self.deliveries.record(
                tenant,
                claim.delivery_id,
                "sent",
                message_id=envelope.message_id,
                smtp_code=reply.code,
                enhanced=reply.enhanced,
                response=str(reply),
                provider=route.provider,
            )
            self.metrics.deliveries.labels("sent").inc()
            return Outcome(claim.delivery_id, "sent", reply.code, str(reply))
        if disposition.result == "retry":
            return await self._temporary(
                job, tenant, claim, reply, str(reply), disposition.retry_after_s
            )
        await self.deliveries.record(
            tenant,
            claim.delivery_id,
            "failed",
            message_id=envelope.message_id,
            smtp_code=reply.code,
            enhanced=reply.enhanced,
            response=str(reply),
            bounce_type=disposition.bounce_type,
            bounce_reason=disposition.reason,
            provider=route.provider,
        )
        self.metrics.deliveries.labels("failed").inc()
        await self._enqueue_bounce(
            tenant,
            claim.delivery_id,
            request.recipient_email,
            envelope.message_id,
            reply,
            disposition.bounce_type or "hard",
            disposition.reason or "undefined",
        )
        return Outcome(claim.delivery_id, "failed", reply.code, str(reply))

    def unsubscribe_links(self, sending_domain: str, token: str) -> tuple[str, str]:
        """The List-Unsubscribe (mailto, URL) of a delivery. With ``public_url`` set, the URL our
        HTTP listener serves and ``unsubscribe+<token>@<bounce domain>`` (accepted by the
        bounce listener); otherwise the configured templates."""
        s = self.settings
        if s.public_url and s.bounce_domains:
            return (
                self.verp.unsubscribe_address(token, s.bounce_domains[0]),
                f"{s.public_url}/unsubscribe/{token}",
            )
        mailto = s.delivery_unsubscribe_mailto.replace("{domain}", sending_domain)
        url = s.delivery_unsubscribe_url.replace("{domain}", sending_domain)
        return f"{mailto}?subject=unsubscribe%20{token}", url.replace("{token}", token)

    async def _temporary(
        self,
        job: Job,
        tenant: str,
        claim: Claim,
        reply: SmtpReply | None,
        text: str,
        hint_s: float | None,
    ) -> Outcome:
        code = reply.code if reply else None
        enhanced = reply.enhanced if reply else None
        if job.attempt >= job.max_attempts and hint_s is None:
            await self.deliveries.record(
                tenant,
                claim.delivery_id,
                "failed",
                smtp_code=code,
                enhanced=enhanced,
                response=text,
                bounce_type="soft",
                bounce_reason="expired" if reply else "networkerror",
            )
            self.metrics.deliveries.labels("failed").inc()
            return Outcome(claim.delivery_id, "failed", code, text)
        await self.deliveries.record(
            tenant, claim.delivery_id, "deferred", smtp_code=code, enhanced=enhanced, response=text
        )
        self.metrics.deliveries.labels("deferred").inc()
        if hint_s is not None:
            raise DeferJob(hint_s, f"server asked to retry later: {text[:200]}")
        raise SendDeferred(text[:500])

    async def _not_sending(self, claim: Claim, request: SendRequest, tenant: str) -> Outcome:
        if claim.status in ("suppressed", "expired"):
            self.metrics.deliveries.labels(claim.status).inc()
            log.info("not sent: %s", claim.status)
        else:
            self.metrics.deliveries.labels("duplicate").inc()
            if claim.status == "failed" and claim.smtp_code and claim.smtp_code >= 500:
                # A re-run after the failed row committed but before its bounce job was
                # queued: queue it (the same job id; bounce processing is idempotent).
                reply = SmtpReply.parse(claim.smtp_code, claim.provider_response or "")
                disposition = classify(reply)
                await self._enqueue_bounce(
                    tenant,
                    claim.delivery_id,
                    request.recipient_email,
                    None,
                    reply,
                    disposition.bounce_type or "hard",
                    disposition.reason or "undefined",
                )
        return Outcome(claim.delivery_id, claim.status, claim.smtp_code, claim.provider_response)

    async def _enqueue_bounce(
        self,
        tenant: str,
        delivery_id: str,
        recipient: str,
        message_id: str | None,
        reply: SmtpReply,
        bounce_type: str,
        reason: str,
    ) -> None:
        payload = BouncePayload(
            tenant_id=tenant,
            message_id=message_id,
            recipient_email=recipient,
            bounce_type="hard" if bounce_type == "hard" else "soft",
            bounce_reason=reason,
            status=reply.enhanced or f"{str(reply.code)[0]}.0.0",
            smtp_code=reply.code,
            diagnostic=reply.text,
            delivery_id=delivery_id,
            source="smtp_reply",
        )
        await self.app.redis.lpush(BOUNCE, encode_job(BOUNCE, payload, id=f"bounce-{delivery_id}"))

    # -- routes and keys --------------------------------------------------------------------

    async def route_for(self, tenant: str, account: Account) -> Route:
        """Seed 004 step 3, "select sending provider": the account's own SMTP endpoint,
        else the tenant's relay (``tenant_relays``), else the global relay."""
        if account.smtp_host:
            return Route("account", self.endpoint_for(account))
        relay = await self.contexts.tenant_relay(tenant)
        if relay is not None:
            password = self.box.open(relay.password_enc) if relay.password_enc else None
            endpoint = Endpoint(
                host=relay.host,
                port=relay.port,
                security=relay.security,
                username=relay.username or None,
                password=password,
            )
            return Route("tenant_relay", endpoint)
        return Route("relay", self.endpoint_for(account))

    def fallback_for(self, route: Route, *, unreachable: bool) -> Route | None:
        """The fallback relay, when configured and due: after a 4xx from the primary, or
        once the primary has been unreachable for ``delivery_fallback_after_s``."""
        s = self.settings
        if not s.delivery_fallback_relay or route.provider == "fallback":
            return None
        if unreachable:
            since = self._down_since.get(route.endpoint.key, self.clock())
            if self.clock() - since < s.delivery_fallback_after_s:
                return None
        host, _, port = s.delivery_fallback_relay.rpartition(":")
        endpoint = Endpoint(
            host=host.strip("[]"), port=int(port), security=s.delivery_fallback_security
        )
        return Route("fallback", endpoint)

    async def _send_routed(
        self, route: Route, mail_from: str, rcpt: str, message: bytes
    ) -> tuple[SmtpReply, Route]:
        """Send through ``route``, and through the fallback relay when the primary answers
        4xx or has been unreachable for long enough; the reply and the route that gave it."""
        try:
            reply = await self.pool.send(route.endpoint, mail_from, rcpt, message)
        except TransportError:
            self._down_since.setdefault(route.endpoint.key, self.clock())
            fallback = self.fallback_for(route, unreachable=True)
            if fallback is None:
                raise
        else:
            self._down_since.pop(route.endpoint.key, None)
            fallback = self.fallback_for(route, unreachable=False) if reply.code < 500 else None
            if reply.code < 400 or fallback is None:
                return reply, route
        self.metrics.deliveries.labels("fallback").inc()
        return await self.pool.send(fallback.endpoint, mail_from, rcpt, message), fallback

    def endpoint_for(self, account: Account) -> Endpoint:
        """The account's own submission endpoint, else the configured relay."""
        if account.smtp_host:
            security = account.smtp_security or "starttls"
            password = (
                self.box.open(account.smtp_password_enc) if account.smtp_password_enc else None
            )
            return Endpoint(
                host=account.smtp_host,
                port=account.smtp_port or DEFAULT_PORTS[security],
                security=security,
                username=account.smtp_username or (account.address if password else None),
                password=password,
            )
        s = self.settings
        if s.delivery_relay:
            host, _, port = s.delivery_relay.rpartition(":")
            password = (
                s.delivery_relay_password.get_secret_value() if s.delivery_relay_password else None
            )
            return Endpoint(
                host=host.strip("[]"),
                port=int(port),
                security=s.delivery_relay_security,
                username=s.delivery_relay_username or None,
                password=password,
            )
        raise RouteError(
            f"email account {account.id!r} has no SMTP endpoint and no relay is configured "
            f"(give the account one: mailgate accounts update --tenant TENANT {account.id} "
            "--smtp-host HOST; or configure MAILGATE_DELIVERY_RELAY)"
        )

    async def check_from_domain(self, tenant: str, account: Account, from_email: str) -> None:
        """A tenant sends only From domains it owns: its sending account's own domain, or
        one registered (and verified) for it in ``tenant_domains``. Anything else is a
        permanent :class:`PayloadError` (issue 16: no tenant sends as another's domain)."""
        domain = domain_of(from_email)
        if domain and domain == domain_of(account.address):
            return
        if domain in await self.contexts.tenant_domains(tenant):
            return
        raise PayloadError(
            f"From domain {domain!r} does not belong to tenant {tenant!r} (send from the "
            f"account's own domain, or register the domain for the tenant: a verified row "
            "in tenant_domains)"
        )

    async def keys_for(self, tenant: str, domain: str) -> list[DkimKey]:
        """The tenant's own keys for the domain: file keys bound to this tenant plus its
        keys from the database (parsed once). Never another tenant's key."""
        keys = list(self.file_keys.get((tenant, domain), ()))
        for selector, sealed in await self.contexts.dkim_keys(tenant, domain):
            key = self._db_keys.get(sealed)
            if key is None:
                pem = self.box.open(sealed).encode()
                key = self._db_keys[sealed] = DkimKey.from_pem(domain, selector, pem)
            keys.append(key)
        return keys

    async def sign(self, tenant: str, domain: str, message: bytes) -> tuple[bytes, int]:
        """``message`` DKIM-signed with the tenant's own keys for ``domain`` (in the signer
        process when one runs), and how many signatures it got (0: no key, unsigned). For
        mail composed outside a campaign send (warmup) that must still be signed."""
        keys = await self.keys_for(tenant, domain)
        if not keys:
            return message, 0
        signed = await sign_message_offloaded(message, keys, self._signer, now=self.clock())
        return signed, len(keys)

    def start_helpers(self) -> None:
        """Start the DKIM signer process now (in the background), so the first send does
        not wait for an interpreter to start; job handlers call it, one-off tools do not."""
        if self._signer is not None:
            self._signer.prestart()

    async def helpers_started(self) -> None:
        """Wait for what :meth:`start_helpers` began (a failed start is retried on use)."""
        if self._signer is not None:
            await self._signer.started()

    async def aclose(self) -> None:
        await self.pool.close()
        if self._signer is not None:
            await self._signer.aclose()


def _seconds_to_midnight(now: float) -> float:
    today = dt.datetime.fromtimestamp(now, dt.UTC)
    tomorrow = (today + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (tomorrow - today).total_seconds())


def _build_sender(app: App, services: Services) -> Sender:
    return Sender(app, services.get(METRICS))


# The process's one Sender: the handler sends through it, the delivery component starts
# its helpers, and the daemon closes it (pool and signer) after the worker has drained.
SENDER: Service[Sender] = Service("delivery.sender", _build_sender, close=Sender.aclose)

__all__ = ["SENDER", "Outcome", "SendDeferred", "Sender"]
