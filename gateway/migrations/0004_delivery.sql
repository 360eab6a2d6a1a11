-- mailgate schema, version 4: outbound delivery (delivery/).
--
-- dkim_keys: DKIM private keys per (tenant, signing domain, selector), sealed with the
-- process secret (gateway.secretkey.CredentialBox, Fernet) like the SMTP passwords; the
-- public half is kept in clear so an operator can publish the DNS record from it.
CREATE TABLE dkim_keys (
    tenant_id        TEXT NOT NULL,
    domain           TEXT NOT NULL,          -- lower-cased signing domain (d=)
    selector         TEXT NOT NULL,          -- s=
    algorithm        TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key_enc  BYTEA NOT NULL,         -- Fernet token of the PEM
    public_key       TEXT,                   -- base64 p= value for the DNS TXT record
    enabled          BOOLEAN NOT NULL DEFAULT true,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, domain, selector)
);

-- A job run again finds its deliveries by job id too (operators' look-ups, `mailgate jobs`).
CREATE INDEX email_deliveries_job ON email_deliveries (tenant_id, job_id);
