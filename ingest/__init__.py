"""IMAP IDLE ingest: mailbox watchers, MIME parsing, message storing, reply detection."""
