"""Bounce handling: SMTP listener, DSN/ARF classification, bounce processing."""
