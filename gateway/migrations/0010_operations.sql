-- Operations surface (issue 14): the dashboard's and `mailgate status`'s recent-window reads.
-- Recent bounces by reason, over every tenant.
CREATE INDEX IF NOT EXISTS bounce_reports_created ON bounce_reports (created_at);
-- Recent events of one type (warmup placement and the like).
CREATE INDEX IF NOT EXISTS events_type_created ON events (type, created_at);
