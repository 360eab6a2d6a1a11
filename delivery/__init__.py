"""Outbound delivery: rendering, suppression, DKIM, VERP, SMTP pool, rate limits."""
