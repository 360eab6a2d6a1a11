-- mailgate schema, version 1: the tables of design §2.
--
-- Conventions: every row carries tenant_id; ids that producers send (tenant_abc, camp_xyz,
-- tpl_123, acct_1) are opaque TEXT; times are timestamptz (UTC); the unique keys below are
-- what makes a re-delivered job, a re-fetched IMAP message or a repeated bounce a no-op.

-- Message storage ------------------------------------------------------------------------

CREATE TABLE email_content (
    storage_key     TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    content_text    TEXT,
    content_html    TEXT,
    headers         JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- The raw RFC 5322 source: the only lossless record, and the fallback when parsing fails.
    raw             BYTEA,
    raw_size_bytes  BIGINT NOT NULL DEFAULT 0,
    parse_error     TEXT,
    created         TIMESTAMPTZ NOT NULL DEFAULT now(),
    retention_days  INTEGER NOT NULL DEFAULT 2555
);
CREATE INDEX email_content_tenant_created ON email_content (tenant_id, created);

CREATE TABLE email_messages (
    id                BIGSERIAL PRIMARY KEY,
    storage_key       TEXT NOT NULL UNIQUE REFERENCES email_content (storage_key) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL,
    email_account_id  TEXT,
    direction         TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    message_type      TEXT NOT NULL DEFAULT 'email',
    from_email        TEXT,
    to_email          TEXT,
    subject           TEXT,
    status            TEXT NOT NULL DEFAULT 'received',
    processed         TIMESTAMPTZ,
    -- Threading and attribution.
    message_id        TEXT,
    in_reply_to       TEXT,
    "references"      TEXT[] NOT NULL DEFAULT '{}',
    delivery_id       TEXT,
    -- Where it came from: 'job' (queue:email:processing), 'imap', 'smtp' (bounce listener).
    source            TEXT NOT NULL DEFAULT 'job',
    folder            TEXT,
    uidvalidity       BIGINT,
    uid               BIGINT,
    -- The identity that makes storing idempotent, chosen by the writer:
    --   job:  'job:<account>:<messageId>'       (same messageId, same account → stored once)
    --   imap: 'imap:<account>:<folder>:<uidvalidity>:<uid>'
    dedupe_key        TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX email_messages_tenant_account ON email_messages (tenant_id, email_account_id, created_at);
CREATE INDEX email_messages_message_id ON email_messages (tenant_id, message_id);
CREATE UNIQUE INDEX email_messages_imap_uid ON email_messages
    (tenant_id, email_account_id, folder, uidvalidity, uid) WHERE uid IS NOT NULL;

CREATE TABLE attachments (
    id                   BIGSERIAL PRIMARY KEY,
    parent_storage_key   TEXT NOT NULL REFERENCES email_content (storage_key) ON DELETE CASCADE,
    tenant_id            TEXT NOT NULL,
    part_index           INTEGER NOT NULL DEFAULT 0,
    filename             TEXT,
    mime_type            TEXT NOT NULL DEFAULT 'application/octet-stream',
    size_bytes           BIGINT NOT NULL DEFAULT 0,
    content              BYTEA,
    content_id           TEXT,
    storage_disposition  TEXT NOT NULL DEFAULT 'attachment'
        CHECK (storage_disposition IN ('attachment', 'inline')),
    UNIQUE (parent_storage_key, part_index)
);

-- Mailboxes --------------------------------------------------------------------------------

CREATE TABLE email_accounts (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    address              TEXT NOT NULL,
    imap_host            TEXT,
    imap_port            INTEGER CHECK (imap_port BETWEEN 1 AND 65535),
    imap_security        TEXT CHECK (imap_security IN ('tls', 'starttls', 'none')),
    imap_username        TEXT,
    -- Fernet tokens under the secret key; never plaintext, never logged.
    imap_password_enc    BYTEA,
    imap_master_user     TEXT,
    folders              TEXT[] NOT NULL DEFAULT '{INBOX}',
    smtp_host            TEXT,
    smtp_port            INTEGER CHECK (smtp_port BETWEEN 1 AND 65535),
    smtp_security        TEXT CHECK (smtp_security IN ('tls', 'starttls', 'none')),
    smtp_username        TEXT,
    smtp_password_enc    BYTEA,
    enabled              BOOLEAN NOT NULL DEFAULT true,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, address)
);

-- IMAP sync state per (account, folder); written in the same transaction as the messages.
CREATE TABLE mailbox_sync (
    tenant_id        TEXT NOT NULL,
    account_id       TEXT NOT NULL REFERENCES email_accounts (id) ON DELETE CASCADE,
    folder           TEXT NOT NULL,
    uidvalidity      BIGINT NOT NULL,
    last_uid         BIGINT NOT NULL DEFAULT 0,
    highest_modseq   BIGINT,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, folder)
);

-- Jobs -------------------------------------------------------------------------------------

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT,
    queue_name      TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'completed', 'retry_scheduled', 'failed')),
    payload         JSONB NOT NULL DEFAULT '{}'::jsonb,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 5,
    worker_id       TEXT,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    completed_at    TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    result          JSONB,
    last_error      TEXT
);
CREATE INDEX jobs_status_queue ON jobs (status, queue_name, updated_at);
CREATE INDEX jobs_tenant ON jobs (tenant_id, created_at);

CREATE TABLE job_executions (
    id           BIGSERIAL PRIMARY KEY,
    job_id       TEXT NOT NULL,
    tenant_id    TEXT,
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('success', 'failed', 'cancelled')),
    error        TEXT,
    duration_ms  DOUBLE PRECISION NOT NULL,
    worker_id    TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX job_executions_job ON job_executions (job_id, at);

-- Campaigns and sending ----------------------------------------------------------------------

CREATE TABLE email_templates (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    name        TEXT,
    subject     TEXT NOT NULL DEFAULT '',
    html        TEXT,
    text        TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX email_templates_tenant ON email_templates (tenant_id);

CREATE TABLE campaigns (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    name              TEXT,
    status            TEXT NOT NULL DEFAULT 'draft',
    email_account_id  TEXT,
    template_id       TEXT,
    from_email        TEXT,
    from_name         TEXT,
    reply_to          TEXT,
    settings          JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_tenant ON campaigns (tenant_id);

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    email       TEXT NOT NULL,
    name        TEXT,
    fields      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX contacts_tenant_email ON contacts (tenant_id, lower(email));

CREATE TABLE email_deliveries (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    campaign_id        TEXT,
    recipient_id       TEXT,
    recipient_email    TEXT NOT NULL,
    email_account_id   TEXT,
    job_id             TEXT,
    -- One delivery per (tenant, idempotency key): a job run twice finds its row.
    idempotency_key    TEXT NOT NULL,
    message_id         TEXT,
    status             TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'failed', 'bounced',
                          'suppressed', 'expired', 'complained')),
    attempt_count      INTEGER NOT NULL DEFAULT 0,
    sent_at            TIMESTAMPTZ,
    provider_response  TEXT,
    smtp_code          INTEGER,
    enhanced_status    TEXT,
    bounced_at         TIMESTAMPTZ,
    bounce_type        TEXT CHECK (bounce_type IN ('hard', 'soft')),
    bounce_reason      TEXT,
    bounce_status      TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX email_deliveries_message_id ON email_deliveries (message_id);
CREATE INDEX email_deliveries_campaign ON email_deliveries (tenant_id, campaign_id, status);
CREATE INDEX email_deliveries_recipient ON email_deliveries (tenant_id, lower(recipient_email), sent_at);

CREATE TABLE suppressions (
    tenant_id   TEXT NOT NULL,
    email       TEXT NOT NULL,  -- stored lower-cased
    reason      TEXT NOT NULL
        CHECK (reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe', 'manual')),
    source      TEXT,
    detail      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, email)
);

CREATE TABLE warmup_configs (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    email_account_id  TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL DEFAULT true,
    daily_start       INTEGER NOT NULL DEFAULT 5 CHECK (daily_start >= 0),
    daily_increment   INTEGER NOT NULL DEFAULT 2 CHECK (daily_increment >= 0),
    daily_max         INTEGER NOT NULL DEFAULT 50 CHECK (daily_max >= 0),
    started_on        DATE NOT NULL DEFAULT CURRENT_DATE,
    settings          JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email_account_id)
);

CREATE TABLE campaign_metrics (
    tenant_id      TEXT NOT NULL,
    campaign_id    TEXT NOT NULL,
    sent           BIGINT NOT NULL DEFAULT 0,
    delivered      BIGINT NOT NULL DEFAULT 0,
    failed         BIGINT NOT NULL DEFAULT 0,
    bounced_hard   BIGINT NOT NULL DEFAULT 0,
    bounced_soft   BIGINT NOT NULL DEFAULT 0,
    complaints     BIGINT NOT NULL DEFAULT 0,
    replies        BIGINT NOT NULL DEFAULT 0,
    auto_replies   BIGINT NOT NULL DEFAULT 0,
    unsubscribes   BIGINT NOT NULL DEFAULT 0,
    suppressed     BIGINT NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id)
);

-- Events outbox and webhooks -----------------------------------------------------------------

CREATE TABLE events (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    type          TEXT NOT NULL,
    subject_id    TEXT,
    payload       JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- The same fact reported twice (a repeated bounce, a re-run job) records one event.
    dedupe_key    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched_at TIMESTAMPTZ,
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX events_undispatched ON events (id) WHERE dispatched_at IS NULL;

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    url         TEXT NOT NULL,
    secret_enc  BYTEA,
    event_types TEXT[] NOT NULL DEFAULT '{}',
    enabled     BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

CREATE TABLE webhook_attempts (
    id             BIGSERIAL PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    event_id       BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id    TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status         TEXT NOT NULL,
    response_code  INTEGER,
    error          TEXT,
    at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id);
