-- mailgate schema, version 5: the shared kernel (gateway/events.py).
--
-- metric_facts: each fact a campaign counter counts, once. The metrics writer inserts the
-- fact and bumps the counter in one statement; a fact recorded again (a replayed report, a
-- re-run job) finds its row and changes nothing. Old facts are pruned by retention cleanup
-- (a replay older than the retention is then counted again, which the callers' own state
-- checks, e.g. a delivery already 'bounced', still prevent).
CREATE TABLE metric_facts (
    tenant_id    TEXT NOT NULL,
    dedupe_key   TEXT NOT NULL,
    campaign_id  TEXT NOT NULL,
    metric       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dedupe_key)
);
CREATE INDEX metric_facts_created ON metric_facts (created_at);
