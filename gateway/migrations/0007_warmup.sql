-- mailgate schema, version 7: warmup (issue 13).
--
-- warmup_configs gains the issue's settings as columns (typed and checked, not JSON):
-- reply_rate (0-1), pool ('tenant': the tenant's own warmup accounts; 'network': every
-- account that opted in, across tenants), weekdays_only, the sending window (whole hours,
-- [start, end) in the account's time zone) and when/why a bounce or complaint paused it.
ALTER TABLE warmup_configs
    ADD COLUMN reply_rate         DOUBLE PRECISION NOT NULL DEFAULT 0.3
        CHECK (reply_rate >= 0 AND reply_rate <= 1),
    ADD COLUMN pool               TEXT NOT NULL DEFAULT 'tenant'
        CHECK (pool IN ('tenant', 'network')),
    ADD COLUMN weekdays_only      BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN window_start_hour  INTEGER NOT NULL DEFAULT 8
        CHECK (window_start_hour BETWEEN 0 AND 23),
    ADD COLUMN window_end_hour    INTEGER NOT NULL DEFAULT 18
        CHECK (window_end_hour BETWEEN 1 AND 24),
    ADD COLUMN time_zone          TEXT NOT NULL DEFAULT 'UTC',
    ADD COLUMN paused_at          TIMESTAMPTZ,
    ADD COLUMN paused_reason      TEXT,
    ADD CONSTRAINT warmup_window_order CHECK (window_start_hour < window_end_hour);

-- One row per warmup message: planned (quota taken, under the config's row lock), sent,
-- then found (or missing) at the receiver and engaged with. A reply is a row of its own
-- (parent_id = the message it answers; at most one per parent: a retried engagement step
-- never replies twice). tenant_id is the sender's; to_tenant_id the receiver's (the
-- network pool crosses tenants). Every timestamp is the moment the action was done.
CREATE TABLE warmup_messages (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    from_account_id   TEXT NOT NULL,
    to_tenant_id      TEXT NOT NULL,
    to_account_id     TEXT NOT NULL,
    message_id        TEXT NOT NULL,          -- with angle brackets; carries the marker
    parent_id         TEXT REFERENCES warmup_messages (id) ON DELETE CASCADE,
    depth             INTEGER NOT NULL DEFAULT 0,     -- 0 a new conversation, 1 its reply
    quota_day         DATE NOT NULL,          -- the sender's local day the send counts for
    subject           TEXT NOT NULL,
    in_reply_to       TEXT,
    "references"      TEXT,
    reply_planned     BOOLEAN NOT NULL DEFAULT false,  -- decided at plan time (reply_rate)
    planned_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),  -- ordered in a tx
    send_claimed_at   TIMESTAMPTZ,
    sent_at           TIMESTAMPTZ,
    send_error        TEXT,
    found_at          TIMESTAMPTZ,
    folder_found      TEXT CHECK (folder_found IN ('inbox', 'spam', 'other')),
    missing_at        TIMESTAMPTZ,            -- not found within warmup_missing_after_s
    moved_to_inbox_at TIMESTAMPTZ,
    read_at           TIMESTAMPTZ,
    flagged_at        TIMESTAMPTZ,
    replied_at        TIMESTAMPTZ,
    reply_message_id  TEXT,
    UNIQUE (tenant_id, message_id)
);
CREATE UNIQUE INDEX warmup_messages_one_reply ON warmup_messages (parent_id)
    WHERE parent_id IS NOT NULL;
CREATE INDEX warmup_messages_sender_day ON warmup_messages (tenant_id, from_account_id, quota_day);
-- A new message may continue the thread of the last reply its receiver sent (in_reply_to).
CREATE INDEX warmup_messages_thread ON warmup_messages (tenant_id, from_account_id, in_reply_to)
    WHERE in_reply_to IS NOT NULL;
CREATE INDEX warmup_messages_receiver ON warmup_messages (to_tenant_id, to_account_id, sent_at);
