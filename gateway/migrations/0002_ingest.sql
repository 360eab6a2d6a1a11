-- mailgate schema, version 2: IMAP ingest (ingest/).
--
-- ingest_fingerprints: the SHA-256 of every raw message stored from a mailbox folder, written
-- in the same transaction as the message. A changed UIDVALIDITY renumbers every message, so the
-- (account, folder, uidvalidity, uid) key cannot recognise them: the fingerprint does, and a
-- resync stores nothing twice. Byte-identical copies in one folder are one message.
CREATE TABLE ingest_fingerprints (
    tenant_id    TEXT NOT NULL,
    account_id   TEXT NOT NULL REFERENCES email_accounts (id) ON DELETE CASCADE,
    folder       TEXT NOT NULL,
    fingerprint  BYTEA NOT NULL,
    storage_key  TEXT NOT NULL REFERENCES email_content (storage_key) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, folder, fingerprint)
);

-- Routing after commit (reply events, bounce jobs) marks the message here; a message whose
-- routing was cut short (crash between commit and routing) is routed again by a sweep.
ALTER TABLE email_messages ADD COLUMN routed_at TIMESTAMPTZ;
CREATE INDEX email_messages_unrouted ON email_messages (created_at)
    WHERE routed_at IS NULL AND source = 'imap';
