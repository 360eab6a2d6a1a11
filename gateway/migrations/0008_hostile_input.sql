-- mailgate schema, version 8: hostile input and isolation (issue 16).
--
-- bounce_reports.report_identity: the identity of a bounce REPORT, whatever envelope or copy
-- brought it (delivery, recipient, action, status, reporting MTA, and the report's own
-- Message-ID, else its Arrival-Date, else the day it came): a replay under another envelope
-- finds the first row and changes no counter, suppression or event. NULL for reports a
-- producer states (seed payloads), which keep their own key.
-- bounce_reports.candidate_delivery_id: for an unattributed report, the delivery it may be
-- about (the recipient's latest send): named for the operator, never changed.
ALTER TABLE bounce_reports
    ADD COLUMN report_identity TEXT,
    ADD COLUMN candidate_delivery_id TEXT;
CREATE UNIQUE INDEX bounce_reports_identity ON bounce_reports (tenant_id, report_identity)
    WHERE report_identity IS NOT NULL;

-- tenant_domains: the From domains a tenant may send as (besides its sending account's own
-- address domain). A domain belongs to one tenant; a send From any other domain fails.
CREATE TABLE tenant_domains (
    domain       TEXT PRIMARY KEY,          -- lower-cased, no trailing dot
    tenant_id    TEXT NOT NULL,
    verified_at  TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tenant_domains_tenant ON tenant_domains (tenant_id);
