-- mailgate schema, version 3: bounce intake and processing (bounces/).
--
-- bounce_receipts: one row per stored copy of a message the SMTP bounce listener accepted,
-- written in the same transaction as the message itself. It remembers the envelope (the
-- VERP recipients say which delivery a bounce is about) and whether processing finished:
-- a receipt still unprocessed after bounce_requeue_after_s is queued again, so nothing
-- accepted is lost even when Redis was down right after the commit.
CREATE TABLE bounce_receipts (
    storage_key    TEXT PRIMARY KEY REFERENCES email_content (storage_key) ON DELETE CASCADE,
    tenant_id      TEXT NOT NULL,
    mail_from      TEXT,
    rcpt_tos       TEXT[] NOT NULL DEFAULT '{}',
    peer           TEXT,
    -- ok (a genuine token naming an existing delivery), not_verp, malformed, forged,
    -- unknown_delivery (genuine token, no such delivery).
    verp_status    TEXT NOT NULL,
    delivery_ids   TEXT[] NOT NULL DEFAULT '{}',
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    enqueued_at    TIMESTAMPTZ,
    processed_at   TIMESTAMPTZ
);
CREATE INDEX bounce_receipts_pending ON bounce_receipts (received_at) WHERE processed_at IS NULL;

-- bounce_reports: one row per (report, recipient) processed; the unique report_key makes
-- processing the same report twice a no-op, and the soft-bounce limit counts these rows.
CREATE TABLE bounce_reports (
    id               BIGSERIAL PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    report_key       TEXT NOT NULL,
    source           TEXT NOT NULL,            -- smtp, mailbox, job
    storage_key      TEXT,
    delivery_id      TEXT,
    campaign_id      TEXT,
    recipient_email  TEXT,                     -- lower-cased
    kind             TEXT NOT NULL,            -- dsn, complaint, auto_reply, not_bounce
    action           TEXT,
    -- bounced_hard, bounced_soft, delayed, complaint, auto_reply, ignored, unattributed
    outcome          TEXT NOT NULL,
    attribution      TEXT NOT NULL,            -- verp, message_id, recipient, none
    bounce_type      TEXT,
    reason           TEXT,
    status           TEXT,
    diagnostic       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, report_key)
);
CREATE INDEX bounce_reports_soft ON bounce_reports (tenant_id, recipient_email, created_at)
    WHERE outcome = 'bounced_soft';
CREATE INDEX bounce_reports_delivery ON bounce_reports (tenant_id, delivery_id);
