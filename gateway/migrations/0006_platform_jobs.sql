-- mailgate schema, version 6: the platform's jobs (issue 12): contact lists and imports,
-- campaign audiences, daily analytics, provider selection.

-- Contact lists: a campaign's audience. member_count is kept by the import (and by whoever
-- adds members) so the platform can show it without counting.
CREATE TABLE contact_lists (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    name          TEXT,
    member_count  BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX contact_lists_tenant ON contact_lists (tenant_id);

CREATE TABLE contact_list_members (
    tenant_id   TEXT NOT NULL,
    list_id     TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, list_id, contact_id)
);

-- The campaign's audience.
ALTER TABLE campaigns ADD COLUMN list_id TEXT;

-- The import job that last wrote a contact: a row of the same file met again (a duplicate
-- address further down) is told apart from a contact that existed before the import.
ALTER TABLE contacts ADD COLUMN import_job_id TEXT;

-- An import's checkpoint, committed in the same transaction as each batch it describes:
-- an import killed halfway and run again skips the rows already done and carries on with
-- the counts as they were, so every valid row lands once and the counts stay exact.
CREATE TABLE import_checkpoints (
    job_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    list_id     TEXT,
    rows_done   BIGINT NOT NULL DEFAULT 0,
    counts      JSONB NOT NULL DEFAULT '{}'::jsonb,
    invalid     JSONB NOT NULL DEFAULT '[]'::jsonb,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (tenant, day, campaign, account); '' stands for none so the key stays unique.
-- Recomputed whole by the analytics job (delete the day, insert it again).
CREATE TABLE analytics_daily (
    tenant_id         TEXT NOT NULL,
    day               DATE NOT NULL,
    campaign_id       TEXT NOT NULL DEFAULT '',
    email_account_id  TEXT NOT NULL DEFAULT '',
    sent              BIGINT NOT NULL DEFAULT 0,
    delivered         BIGINT NOT NULL DEFAULT 0,
    failed            BIGINT NOT NULL DEFAULT 0,
    bounced_hard      BIGINT NOT NULL DEFAULT 0,
    bounced_soft      BIGINT NOT NULL DEFAULT 0,
    complaints        BIGINT NOT NULL DEFAULT 0,
    replies           BIGINT NOT NULL DEFAULT 0,
    auto_replies      BIGINT NOT NULL DEFAULT 0,
    unsubscribes      BIGINT NOT NULL DEFAULT 0,
    computed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, campaign_id, email_account_id)
);
CREATE INDEX analytics_daily_day ON analytics_daily (day);

-- The day a delivery counts on (its send, else its creation): the aggregate's range scan.
CREATE INDEX email_deliveries_day ON email_deliveries ((coalesce(sent_at, created_at)));
CREATE INDEX email_messages_created ON email_messages (created_at);
CREATE INDEX suppressions_created ON suppressions (created_at);
CREATE INDEX suppressions_expires ON suppressions (expires_at) WHERE expires_at IS NOT NULL;
-- Retention cleanup's scans.
CREATE INDEX jobs_completed ON jobs (completed_at) WHERE status = 'completed';
CREATE INDEX job_executions_at ON job_executions (at);
CREATE INDEX events_dispatched ON events (created_at) WHERE dispatched_at IS NOT NULL;
CREATE INDEX email_content_created ON email_content (created);

-- Provider selection (seed 004 email.send step 3): the account's own endpoint, else the
-- tenant's relay (here), else the global relay; which one sent is recorded per delivery.
CREATE TABLE tenant_relays (
    tenant_id          TEXT PRIMARY KEY,
    host               TEXT NOT NULL,
    port               INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    security           TEXT NOT NULL DEFAULT 'starttls'
        CHECK (security IN ('tls', 'starttls', 'none')),
    username           TEXT,
    password_enc       BYTEA,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE email_deliveries ADD COLUMN provider TEXT;
