-- mailgate schema, version 9: events out, feedback in (issue 17).
--
-- webhook_endpoints gains several secrets at once (rotation: every secret signs, the
-- newest first; each a Fernet token of a `whsec_` secret under the process secret), a
-- per-endpoint concurrency, and why and when it was disabled. failing_since: the first
-- failed attempt since the last success (an endpoint failing for 5 days is disabled).
ALTER TABLE webhook_endpoints
    ADD COLUMN secrets_enc     BYTEA[] NOT NULL DEFAULT '{}',
    ADD COLUMN concurrency     INTEGER NOT NULL DEFAULT 4 CHECK (concurrency BETWEEN 1 AND 64),
    ADD COLUMN failing_since   TIMESTAMPTZ,
    ADD COLUMN disabled_at     TIMESTAMPTZ,
    ADD COLUMN disabled_reason TEXT,
    ADD COLUMN updated_at      TIMESTAMPTZ NOT NULL DEFAULT now();
UPDATE webhook_endpoints SET secrets_enc = ARRAY[secret_enc] WHERE secret_enc IS NOT NULL;

-- Every attempt: its number, code, latency and the webhook-id it carried.
ALTER TABLE webhook_attempts
    ADD COLUMN attempt     INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN latency_ms  DOUBLE PRECISION,
    ADD COLUMN webhook_id  TEXT,
    ADD COLUMN job_id      TEXT;
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (tenant_id, endpoint_id, at);

-- One row per (event, endpoint) the dispatcher fanned out: a job run again after the
-- event was delivered sends nothing (`delivered_at` set), so a re-queued job (a SIGKILL
-- between the push and the commit) does not deliver twice.
CREATE TABLE webhook_deliveries (
    tenant_id     TEXT NOT NULL,
    event_id      BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id   TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    attempts      INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'dropped')),
    last_code     INTEGER,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at  TIMESTAMPTZ,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (tenant_id, status)
    WHERE status = 'pending';

-- The outbox cursor, per tenant: how far the dispatcher has read each tenant's events (the
-- highest event id fanned out) and when. Reading is by `events.dispatched_at IS NULL` (ids
-- commit out of order; a cursor alone would skip an event whose transaction committed
-- late); the cursor says how far behind the dispatcher is.
-- Nothing consumed the outbox before this version: the events recorded until now count as
-- dispatched, so an endpoint added later does not receive the whole history.
UPDATE events SET dispatched_at = now() WHERE dispatched_at IS NULL;

CREATE TABLE outbox_cursor (
    tenant_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    last_event_id  BIGINT NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Deliverability guards: an account or a campaign paused with a reason. Sends of a paused
-- account or campaign are held (deferred, kept) until `mailgate accounts|campaigns resume`.
CREATE TABLE sending_pauses (
    tenant_id    TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('account', 'campaign')),
    subject_id   TEXT NOT NULL,
    guard        TEXT NOT NULL,          -- hard_bounce_rate, complaint_rate, policy_blocks
    reason       TEXT NOT NULL,
    rate         DOUBLE PRECISION,
    paused_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- After a resume the guards count only sends made since (a fresh window): a resume
    -- with --force while still over the threshold does not trip again at once.
    resumed_at   TIMESTAMPTZ,
    paused       BOOLEAN NOT NULL DEFAULT true,
    previous_status TEXT,                -- a campaign's status before the pause
    PRIMARY KEY (tenant_id, scope, subject_id)
);

-- The guards' rolling windows read the latest deliveries of an account or a campaign.
CREATE INDEX email_deliveries_account_recent
    ON email_deliveries (tenant_id, email_account_id, created_at DESC);
CREATE INDEX email_deliveries_campaign_recent
    ON email_deliveries (tenant_id, campaign_id, created_at DESC);

-- Unsubscribes (RFC 8058 one-click POST, or the mailto): the delivery that carried the
-- link is marked; the recipient is suppressed with reason 'unsubscribe'.
ALTER TABLE email_deliveries ADD COLUMN unsubscribed_at TIMESTAMPTZ;
