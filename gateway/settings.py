"""The one settings model of mailgate.

Values come, highest precedence first, from keyword arguments (tests), ``MAILGATE_*``
environment variables, and an optional TOML file (``--config`` or ``MAILGATE_CONFIG``).
Validation happens once, at start: a bad value fails with a message naming the setting,
unknown keys in the TOML file are rejected, and every field carries a description and its
bounds so the README's configuration reference can be generated from this model
(``python -m gateway.settings`` prints it).
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError as SourceError

from gateway.errors import UserFacingError
from gateway.jobs.contracts import FAMILIES
from gateway.redisurl import SENTINEL_SCHEME, is_sentinel, parse_sentinel_url

ENV_PREFIX = "MAILGATE_"
# Entry-point group of the daemon's components (gateway.components reads it too).
COMPONENTS_GROUP = "mailgate.components"


class ListenAddress(NamedTuple):
    """A ``host:port`` pair to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_listen(value: Any) -> ListenAddress:
    """Parse ``host:port`` (``[v6]:port`` for IPv6); port 0 asks the OS for a free port."""
    if isinstance(value, ListenAddress):
        return value
    if isinstance(value, list | tuple) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    if not isinstance(value, str):
        raise ValueError("expected 'host:port'")
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected 'host:port', got {value!r}")
    host = host.strip("[]")
    if not port_text.isdigit():
        raise ValueError(f"port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return ListenAddress(host, port)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip().lower() for item in value.split(",") if item.strip()]
    return value


Listen = Annotated[ListenAddress, NoDecode, BeforeValidator(parse_listen)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


def _split_paths(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Comma-separated paths: case kept.
PathList = Annotated[list[str], NoDecode, BeforeValidator(_split_paths)]


ROOT_DATA_DIR = Path("/var/lib/mailgate")


def default_data_dir() -> Path:
    """Where the embedded servers and the generated key live by default.

    A user's XDG data directory (``~/.local/share/mailgate``); as root, /var/lib/mailgate,
    where a system service keeps its state: root's home is private (0700), and the embedded
    PostgreSQL, which runs as ``nobody``, could not reach a cluster under it. A root install
    from before that choice keeps its data where it is when that data still exists."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    user_dir = Path(base) / "mailgate"
    if os.geteuid() == 0 and not (user_dir / "postgres").exists():
        return ROOT_DATA_DIR
    return user_dir


class Settings(BaseSettings):
    """Every setting of a mailgate process. Environment: ``MAILGATE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # Where the TOML file was read from (not a setting itself; set by load_settings).
    config_file: ClassVar[Path | None] = None

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN (postgresql://user:pass@host:port/db; several hosts "
        "host1:port,host2:port with ?target_session_attrs=read-write for failover). Unset: "
        "`mailgate run` starts a private embedded PostgreSQL under data_dir.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (redis://host:port/db), or Sentinel: "
        "redis+sentinel://[:password@]host:port,host:port/service_name/db. Unset: "
        "`mailgate run` starts a private embedded Redis under data_dir.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for the embedded servers, the generated secret key and "
        "other local state. Default: $XDG_DATA_HOME/mailgate or ~/.local/share/mailgate; "
        "as root /var/lib/mailgate.",
    )
    http_listen: Listen = Field(
        default=ListenAddress("127.0.0.1", 8025),
        description="host:port of the HTTP endpoint (/healthz, /readyz, /metrics).",
    )
    smtp_listen: Listen = Field(
        default=ListenAddress("127.0.0.1", 2525),
        description="host:port of the bounce SMTP listener (port 25 in production).",
    )
    bounce_domains: CsvList = Field(
        default_factory=list,
        description="Comma-separated domains whose addresses the bounce listener accepts "
        "(everything else gets 550 5.7.1: never an open relay).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Secret for VERP token HMACs and credential encryption (>= 32 chars). "
        "Unset and no secret_key_file: a key is generated in data_dir on first use.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="File holding the secret key (alternative to secret_key).",
    )
    components: CsvList = Field(
        default_factory=lambda: ["all"],
        description="Comma-separated components `mailgate run` starts (entry points of "
        "group mailgate.components), or `all`. `none` runs only the HTTP endpoint.",
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="Seconds in-flight work may take to finish after SIGTERM before it is "
        "cancelled (0-600).",
    )
    watchdog_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds between systemd WATCHDOG=1 pings when NOTIFY_SOCKET is set; "
        "halved when WATCHDOG_USEC asks for more often (0-300].",
    )
    db_pool_min: int = Field(
        default=2, ge=1, le=100, description="Minimum PostgreSQL pool size (1-100)."
    )
    db_pool_max: int = Field(
        default=20, ge=1, le=500, description="Maximum PostgreSQL pool size (1-500)."
    )
    db_connect_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="PostgreSQL connect timeout in seconds (0-120]."
    )
    db_command_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="Default PostgreSQL statement timeout in seconds."
    )
    redis_max_connections: int = Field(
        default=100, ge=2, le=10000, description="Maximum Redis connections per process (2-10000)."
    )
    log_level: str = Field(
        default="INFO",
        pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    log_format: str = Field(
        default="auto",
        pattern=r"^(auto|json|text)$",
        description="`json` (one object per line), `text` (readable), or `auto`: text on a "
        "terminal, JSON otherwise.",
    )
    worker_concurrency: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Jobs one process runs at once, all queues together (1-10000); each "
        "handler also has its own limit (email sending 50, imports 2, others 10).",
    )
    stalled_timeout_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="A worker whose heartbeat is older than this is dead: its jobs go back "
        "to the head of their queues (1-3600).",
    )
    job_ttl_s: int = Field(
        default=86400,
        ge=60,
        le=90 * 86400,
        description="How long the Redis hash job:{id} is kept after the job ended (60 s-90 d).",
    )
    job_retry_max_delay_s: float = Field(
        default=300.0,
        ge=1,
        le=86400,
        description="Cap of the exponential retry backoff min(2^n s, cap) (1-86400).",
    )
    worker_idle_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="An idle worker is woken by Redis keyspace notifications; it also "
        "checks the queues this often in case one was missed (0-60].",
    )
    redis_set_notifications: bool = Field(
        default=False,
        description="Let the worker turn on keyspace notifications (CONFIG SET "
        "notify-keyspace-events Kl) on a Redis where they are off. Off by default: the Redis "
        "may be the platform's, and CONFIG SET changes it for every client; without "
        "notifications idle workers poll every 50 ms. The embedded Redis has them on.",
    )
    job_timeouts: str = Field(
        default="",
        description="Per queue family, the seconds one attempt of a job may run before it is "
        "cancelled and counted as a failed attempt: 'family=seconds' comma-separated (e.g. "
        "'import=28800,webhook=30'). Unnamed families keep their defaults: "
        + ", ".join(f"{f.name} {f.timeout_s:g}" for f in FAMILIES)
        + ".",
    )
    # -- ingest (IMAP): fields added by ingest/ ------------------------------------------
    ingest_account_poll_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds between reads of email_accounts: added, changed and removed "
        "mailboxes are picked up without a restart, and unowned ones taken over (0-300].",
    )
    ingest_lease_ttl_s: float = Field(
        default=20.0,
        ge=3,
        le=300,
        description="Lifetime of a mailbox's Redis lease; its holder renews it every third of "
        "this. A dead instance's mailboxes are taken over within this plus "
        "ingest_account_poll_s (3-300).",
    )
    ingest_idle_renew_s: float = Field(
        default=300.0,
        ge=5,
        le=1740,
        description="IDLE is ended and re-issued after this many seconds (RFC 2177 asks for "
        "less than 29 minutes); the tagged answer also proves the connection alive (5-1740).",
    )
    ingest_command_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds an IMAP command (or a silent stretch of a FETCH) may take before "
        "the connection is dropped and re-opened (0-600].",
    )
    ingest_connect_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Seconds to connect to an IMAP server and read its greeting (0-300].",
    )
    ingest_backoff_base_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="First reconnect delay after a failure; doubles per failure up to "
        "ingest_backoff_max_s, each delay jittered to 50-100 % (0-60].",
    )
    ingest_backoff_max_s: float = Field(
        default=300.0,
        ge=1,
        le=3600,
        description="Cap of the reconnect backoff in seconds (1-3600).",
    )
    ingest_logins_per_min: int = Field(
        default=600,
        ge=1,
        le=100000,
        description="IMAP logins per minute per IMAP host, all instances together (a token "
        "bucket in Redis), so a reconnect storm cannot lock accounts out (1-100000).",
    )
    ingest_login_burst: int = Field(
        default=50,
        ge=1,
        le=100000,
        description="Logins the per-host bucket allows at once before the per-minute rate "
        "applies (1-100000).",
    )
    ingest_start_stagger_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="Watchers start at random moments within this many seconds of the "
        "component's start (0-600).",
    )
    ingest_max_message_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="A message larger than this is stored raw with its headers only, no "
        "parts (1 KB-1 GB).",
    )
    ingest_offloop_parse_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        le=1024 * 1024 * 1024,
        description="Messages at least this large are parsed in a worker thread so the "
        "event loop keeps serving other mailboxes (0: always) (0-1 GB).",
    )
    ingest_fetch_batch_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="One UID FETCH asks for message bodies up to about this many bytes "
        "together (1 KB-1 GB).",
    )
    ingest_fetch_batch_messages: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="One UID FETCH asks for at most this many message bodies (1-10000).",
    )
    ingest_committers: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Transactions that store fetched messages at once, for all mailboxes "
        "together; batches that wait meanwhile share the next one (1-32).",
    )

    # -- bounces (SMTP listener, processing): fields added by bounces/ -------------------
    smtp_hostname: str = Field(
        default="",
        max_length=253,
        pattern=r"^[A-Za-z0-9.\-]*$",
        description="Host name the bounce listener greets with (220/EHLO). Empty: the "
        "machine's host name (never a DNS lookup).",
    )
    smtp_max_message_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="Largest message the bounce listener accepts, in bytes (larger: "
        "552 5.3.4) (1 KB-100 MB).",
    )
    smtp_max_recipients: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Recipients per message the bounce listener accepts (more: 452) (1-10000).",
    )
    smtp_max_line_bytes: int = Field(
        default=8192,
        ge=1001,
        le=1024 * 1024,
        description="Longest command or message line the bounce listener reads, in bytes "
        "with CRLF (RFC 5321 asks for 1000; some MTAs exceed it) (1001-1 MB).",
    )
    smtp_max_connections: int = Field(
        default=1000,
        ge=1,
        le=100000,
        description="Concurrent connections the bounce listener serves, all clients "
        "together (more: 421) (1-100000).",
    )
    smtp_max_connections_per_ip: int = Field(
        default=50,
        ge=1,
        le=10000,
        description="Concurrent connections the bounce listener serves per client IP "
        "address (more: 421) (1-10000).",
    )
    smtp_idle_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Seconds the bounce listener waits for the next SMTP command before it "
        "closes the connection (0-3600].",
    )
    smtp_data_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Seconds a whole DATA phase (message transfer) may take on the bounce "
        "listener (0-3600].",
    )
    smtp_commit_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Seconds the bounce listener waits to commit a message to PostgreSQL "
        "and queue its processing; longer (or any storage failure): 451 4.3.0, the sender "
        "retries (0-300].",
    )
    smtp_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain for STARTTLS on the bounce listener (with "
        "smtp_tls_key_file). Unset: no STARTTLS.",
    )
    smtp_tls_key_file: Path | None = Field(
        default=None,
        description="PEM private key for smtp_tls_cert_file.",
    )
    bounce_soft_limit: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Soft bounces of one recipient within bounce_soft_window_days after "
        "which it is suppressed (1-1000).",
    )
    bounce_soft_window_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Window in days over which soft bounces are counted (1-3650).",
    )
    bounce_requeue_after_s: float = Field(
        default=300.0,
        ge=10,
        le=86400,
        description="A message the bounce listener stored whose processing has not finished "
        "after this many seconds is queued for processing again (10-86400).",
    )

    # -- delivery (SMTP pool, DKIM, rate limits): fields added by delivery/ -------------
    delivery_concurrency: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="email-sending jobs one worker runs at once (1-1000).",
    )
    delivery_relay: str = Field(
        default="",
        max_length=300,
        pattern=r"^([A-Za-z0-9.\-\[\]:]+:\d{1,5})?$",
        description="host:port of an SMTP relay for accounts without their own SMTP "
        "endpoint. Empty: such accounts cannot send (the job fails permanently).",
    )
    delivery_relay_security: str = Field(
        default="starttls",
        pattern=r"^(starttls|tls|none)$",
        description="Transport security to the relay: starttls, tls (implicit, port 465) or none.",
    )
    delivery_relay_username: str = Field(
        default="", max_length=320, description="AUTH user name for the relay (empty: no AUTH)."
    )
    delivery_relay_password: SecretStr | None = Field(
        default=None, description="AUTH password for the relay."
    )
    delivery_tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle trusted for SMTP TLS (unset: the system's trust store).",
    )
    delivery_helo_name: str = Field(
        default="",
        max_length=253,
        pattern=r"^[A-Za-z0-9.\-]*$",
        description="Name sent in EHLO. Empty: the machine's host name.",
    )
    delivery_pool_max_per_endpoint: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Open SMTP connections per (endpoint, credentials) in one process (1-1000).",
    )
    delivery_pool_max_messages: int = Field(
        default=100,
        ge=1,
        le=100000,
        description="Messages sent over one SMTP connection before it is closed (1-100000).",
    )
    delivery_pool_idle_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="An idle pooled SMTP connection older than this is closed, not reused "
        "(0-3600].",
    )
    delivery_connect_timeout_s: float = Field(
        default=15.0, gt=0, le=300, description="Seconds to connect, greet and log in (0-300]."
    )
    delivery_command_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="The SMTP reply timeout: one transaction (MAIL, RCPT, DATA, the "
        "content and the final reply) must finish within three of them (0-600].",
    )
    delivery_account_per_minute: int = Field(
        default=60,
        ge=0,
        le=1000000,
        description="Messages one sending account may send per rolling minute, all "
        "instances together (0: no limit).",
    )
    delivery_account_per_hour: int = Field(
        default=1000,
        ge=0,
        le=10000000,
        description="Messages per sending account per rolling hour (0: no limit).",
    )
    delivery_account_per_day: int = Field(
        default=5000,
        ge=0,
        le=100000000,
        description="Messages per sending account per rolling day (0: no limit); an "
        "enabled warmup_configs row lowers it to its ramp (start + increment x days, "
        "at most max).",
    )
    delivery_domain_per_minute: int = Field(
        default=600,
        ge=0,
        le=10000000,
        description="Messages per recipient domain per rolling minute, all accounts and "
        "instances together (0: no limit).",
    )
    delivery_domain_concurrency: int = Field(
        default=20,
        ge=0,
        le=100000,
        description="SMTP transactions in flight per recipient domain, all instances "
        "together (0: no limit).",
    )
    delivery_domain_limits: str = Field(
        default="",
        max_length=10000,
        pattern=r"^\s*([A-Za-z0-9.\-]+=\d+/\d+\s*(,\s*[A-Za-z0-9.\-]+=\d+/\d+\s*)*)?$",
        description="Per-domain overrides, 'domain=per_minute/concurrency' comma-separated "
        "(e.g. 'gmail.com=600/10,yahoo.com=300/5').",
    )
    delivery_tenant_per_minute: int = Field(
        default=0,
        ge=0,
        le=10000000,
        description="Messages per tenant per rolling minute (0: no limit).",
    )
    delivery_max_age_s: float = Field(
        default=3 * 86400.0,
        ge=60,
        le=30 * 86400,
        description="A send job older than this (since its created_at) is not sent; the "
        "delivery is recorded expired (60 s-30 days).",
    )
    delivery_claim_lease_s: float = Field(
        default=200.0,
        ge=0,
        le=3600,
        description="A delivery claimed 'sending' by one run is not taken over by another "
        "run for this long (a worker reaped while still alive may still be sending it); "
        "the second run is deferred. Keep it above connect + 3 x command timeouts. 0: off "
        "(0-3600 s).",
    )
    delivery_dkim_keys: str = Field(
        default="",
        max_length=10000,
        description="DKIM keys from files, 'tenant:domain:selector:/path/key.pem' "
        "comma-separated (RSA or Ed25519 PKCS#8/PKCS#1 PEM); a key signs only the named "
        "tenant's mail. The tenant's keys in the dkim_keys table (encrypted) are used as well.",
    )
    delivery_dkim_signer_process: bool = Field(
        default=True,
        description="DKIM signing (header canonicalisation and the RSA or Ed25519 "
        "signature) in a helper process (its own core and GIL; batched over a pipe); false: "
        "on the event loop.",
    )
    delivery_unsubscribe_url: str = Field(
        default="https://{domain}/unsubscribe/{token}",
        max_length=500,
        pattern=r"^https://.*\{token\}.*$",
        description="One-click unsubscribe URL (RFC 8058); {token} is the signed delivery "
        "token, {domain} the sending domain.",
    )
    delivery_unsubscribe_mailto: str = Field(
        default="unsubscribe@{domain}",
        max_length=320,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="Mailbox of the List-Unsubscribe mailto (the token goes in the "
        "subject); {domain} is the sending domain.",
    )

    delivery_fallback_relay: str = Field(
        default="",
        max_length=300,
        pattern=r"^([A-Za-z0-9.\-\[\]:]+:\d{1,5})?$",
        description="host:port of a fallback SMTP relay, used when the primary route "
        "answers 4xx or has been unreachable for delivery_fallback_after_s. Empty: none.",
    )
    delivery_fallback_security: str = Field(
        default="starttls",
        pattern=r"^(starttls|tls|none)$",
        description="Transport security to the fallback relay: starttls, tls or none.",
    )
    delivery_fallback_after_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="How long the primary route must have been unreachable before sends "
        "go to the fallback relay (0: at the first failure). A 4xx always tries it.",
    )

    # -- the platform's jobs: import, export, analytics, cleanup (issue 12) ----------------
    file_roots: PathList = Field(
        default_factory=list,
        description="Directories, besides data_dir/imports and data_dir/exports (always "
        "allowed), that file:// URLs of import and export jobs may name (comma-separated). "
        "Nothing else on the host is read or written for a job.",
    )
    import_allow_private: bool = Field(
        default=False,
        description="Let http(s) import file URLs reach loopback, link-local or private "
        "addresses (SSRF guard off; for tests and a trusted private network).",
    )
    analytics_schedule: bool = Field(
        default=True,
        description="Enqueue yesterday's and today's analytics aggregate every hour and the "
        "retention cleanup every day (once across all instances).",
    )
    campaign_complete_poll_s: float = Field(
        default=10.0,
        ge=0.05,
        le=3600,
        description="How often campaign.process looks again whether every send of a "
        "campaign it fanned out is final (then the campaign becomes sent).",
    )
    retention_jobs_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Completed jobs, job executions, import checkpoints and the files in "
        "data_dir/imports and data_dir/exports older than this many days are deleted by "
        "maintenance.cleanup (1-3650).",
    )
    retention_events_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Dispatched events (and their webhook attempts) and counted metric "
        "facts older than this many days are deleted by maintenance.cleanup (1-3650).",
    )
    cleanup_batch_rows: int = Field(
        default=1000,
        ge=10,
        le=100000,
        description="Rows maintenance.cleanup deletes per statement: small batches keep "
        "locks short so ingest is never blocked for long (10-100000).",
    )

    # -- warmup (issue 13): fields added by warmup/ ----------------------------------------
    warmup_inbound_delay_s: float = Field(
        default=180.0,
        ge=0,
        le=86400,
        description="Delay between a warmup send and the receiver's inbound step (looking "
        "for it over IMAP), so the mail has time to arrive (0-86400 s).",
    )
    warmup_missing_after_s: float = Field(
        default=7200.0,
        ge=1,
        le=604800,
        description="A warmup message not found in INBOX or Junk this long after its send "
        "counts as missing (1 s-7 days).",
    )
    warmup_retry_find_s: float = Field(
        default=60.0,
        ge=0.1,
        le=3600,
        description="How soon an inbound step that did not find the message looks again "
        "(until warmup_missing_after_s).",
    )
    warmup_flag_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the warmup messages a receiver flags (\\Flagged, important) "
        "besides marking them read (0-1).",
    )
    warmup_tick_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="How often the warmup planner (one active across instances) plans and "
        "queues the sends that are due.",
    )
    warmup_imap_timeout_s: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="Timeout of the connection and of each IMAP command of a warmup step.",
    )
    warmup_send_lease_s: float = Field(
        default=200.0,
        ge=0,
        le=3600,
        description="A warmup send claimed by one run is not taken over by another for "
        "this long (the first may still be in its SMTP transaction).",
    )

    # -- operations: dashboard, status, Redis failover (issue 14) ---------------------------
    dashboard_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Token of the dashboard and /api/: a bearer token for scripts and the "
        "dashboard's login password (>= 16 chars). Unset: the dashboard is read-only and "
        "answers loopback clients only.",
    )
    status_interval_s: float = Field(
        default=10.0,
        ge=0.2,
        le=300,
        description="Seconds between the daemon's status snapshots and counter samples in "
        "Redis (read by `mailgate status` and the dashboard); a snapshot expires after 3 "
        "intervals [0.2-300].",
    )
    redis_wait_replicas: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Replicas that must hold a job's take and finish before the worker goes "
        "on (Redis WAIT), so a Sentinel failover loses no job state. Unset: 1 with a "
        "redis+sentinel:// URL, otherwise 0 (0-10).",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000,
        ge=10,
        le=60000,
        description="Milliseconds a WAIT for redis_wait_replicas may take before the worker "
        "goes on regardless (and logs it) (10-60000).",
    )

    # -- bounce listener under hostile load (issue 16) -----------------------------------
    smtp_memory_budget_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        le=64 * 1024 * 1024 * 1024,
        description="Message bytes the bounce listener holds in memory at once, all sessions "
        "together; a message that would pass it gets 452 4.3.1 after its data, and with all "
        "of it in use new connections get 421. One client address holds at most a quarter "
        "(at least one smtp_max_message_bytes) and an eighth is kept for messages under "
        "64 KB, so a flood of large messages never starves a small DSN (1 MB-64 GB).",
    )
    smtp_commit_batch_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="Bytes of messages one group commit of the bounce listener stores at "
        "most (besides 64 messages); a larger message commits alone (64 KB-1 GB).",
    )

    # -- events out, feedback in (issue 17) -------------------------------------------------
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhook endpoints resolve to loopback, link-local or private "
        "addresses (SSRF guard off; for tests and a trusted private network).",
    )
    webhook_concurrency: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Webhook deliveries one process runs at once, all endpoints together "
        "(each endpoint also has its own limit, 4 by default) (1-1024).",
    )
    webhook_connect_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Seconds to connect to a webhook endpoint (0-60)."
    )
    webhook_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=120,
        description="Seconds one webhook attempt may take in total, connect to last byte (0-120).",
    )
    webhook_retry_schedule_s: str = Field(
        default="0,5,300,1800,7200,18000,36000,50400,72000,86400",
        max_length=500,
        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
        description="Delay before each webhook attempt, comma-separated seconds: the first "
        "(0: immediately), then one per retry (Standard Webhooks' schedule: 5 s, 5 min, "
        "30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).",
    )
    webhook_disable_after_s: float = Field(
        default=5 * 86400.0,
        ge=60,
        le=90 * 86400,
        description="An endpoint failing every attempt for this long is disabled, with an "
        "event saying why (60 s-90 days).",
    )
    webhook_dispatch_batch: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="Events the dispatcher reads from the outbox per round (1-10000).",
    )
    webhook_dispatch_idle_s: float = Field(
        default=0.5,
        ge=0.01,
        le=60,
        description="Seconds the dispatcher waits when the outbox is empty (0.01-60).",
    )
    public_url: str | None = Field(
        default=None,
        max_length=500,
        description="Public base URL of the unsubscribe endpoint (e.g. https://u.example.com). "
        "Set: every campaign message's List-Unsubscribe carries <public_url>/unsubscribe/"
        "<token> and unsubscribe+<token>@<bounce domain>. HTTPS, or http:// for a loopback "
        "host only (tests, a local proxy).",
    )
    guard_bounce_window: int = Field(
        default=200,
        ge=10,
        le=100000,
        description="Deliverability guard: the hard-bounce rate is counted over an account's "
        "(and a campaign's) last this many sends (fewer sends count as this many) (10-100000).",
    )
    guard_bounce_rate: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Hard-bounce rate over guard_bounce_window sends that pauses the account "
        "or campaign (default 5 %).",
    )
    guard_complaint_window: int = Field(
        default=1000,
        ge=10,
        le=1000000,
        description="The complaint rate is counted over this many latest sends (10-1000000).",
    )
    guard_complaint_rate: float = Field(
        default=0.003,
        gt=0,
        le=1,
        description="Complaint rate that pauses the account or campaign (default 0.3 %, "
        "Gmail's threshold).",
    )
    guard_policy_blocks: int = Field(
        default=10,
        ge=1,
        le=10000,
        description="Consecutive 5xx policy blocks from one destination domain that pause "
        "the account (1-10000).",
    )
    guard_hold_s: float = Field(
        default=60.0,
        ge=0.1,
        le=86400,
        description="A send of a paused account or campaign is held (deferred, kept) and "
        "looked at again after this many seconds; a resume brings held sends forward "
        "(0.1-86400).",
    )

    # -- embedded servers ------------------------------------------------------------------
    embedded_start_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Seconds to wait for an embedded server to start."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_pg_url(value.get_secret_value())
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            if is_sentinel(url):
                parse_sentinel_url(url)
            else:
                _check_url(url, ("redis", "rediss", "unix", SENTINEL_SCHEME), 6379)
        return value

    @field_validator("components")
    @classmethod
    def _components(cls, value: list[str]) -> list[str]:
        if value in (["all"], ["none"], []):
            return value
        installed = sorted(ep.name for ep in entry_points(group=COMPONENTS_GROUP))
        unknown = [name for name in value if name not in installed]
        if unknown:
            raise ValueError(
                f"unknown component {', '.join(map(repr, unknown))} (installed: "
                f"{', '.join(installed) or 'none'}; or all, none)"
            )
        return value

    @field_validator("job_timeouts")
    @classmethod
    def _job_timeouts(cls, value: str) -> str:
        job_timeouts(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        host = (parts.hostname or "").lower()
        if parts.scheme == "http" and host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("must be https:// (http:// only for a loopback host: RFC 8058)")
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be an https:// URL")
        return value.strip().rstrip("/")

    @field_validator("bounce_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        for domain in value:
            if "." not in domain or "@" in domain or " " in domain:
                raise ValueError(f"not a domain name: {domain!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.config_file))
        return tuple(sources)

    # -- derived values ---------------------------------------------------------------

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets replaced by ``********``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = (
                    _mask_url(value.get_secret_value()) if name.endswith("_url") else "********"
                )
            elif isinstance(value, (ListenAddress, Path)):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def job_timeouts(text: str) -> dict[str, float]:
    """Seconds per queue family: the defaults of :data:`gateway.jobs.contracts.FAMILIES`
    with the overrides of ``text`` ('family=seconds,...'); a bad entry is a ValueError."""
    out = {f.name: f.timeout_s for f in FAMILIES}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, seconds = item.partition("=")
        name = name.strip()
        if not sep or name not in out:
            raise ValueError(f"{item!r}: expected family=seconds, family one of {', '.join(out)}")
        try:
            value = float(seconds)
        except ValueError:
            raise ValueError(f"{item!r}: seconds must be a number") from None
        if not 1 <= value <= 7 * 86400:
            raise ValueError(f"{item!r}: seconds must be between 1 and 604800")
        out[name] = value
    return out


def _check_url(url: str, schemes: tuple[str, ...], default_port: int) -> None:
    """A URL the client library will accept: a known scheme, a host, a numeric port."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(
            f"URL scheme {parts.scheme or '(none)'!r} is not one of "
            f"{', '.join(s + '://' for s in schemes)}"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path")
        return
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError("the port is not a number between 0 and 65535") from None
    if not parts.hostname or not 0 < port < 65536:
        raise ValueError("the URL needs a host (scheme://[user[:password]@]host[:port]/...)")


def _check_pg_url(url: str) -> None:
    """A PostgreSQL DSN: one host, or several (``host1:port,host2:port``, tried in order;
    ``target_session_attrs=read-write`` picks the primary)."""
    scheme, sep, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    if not sep or "," not in netloc:
        _check_url(url, ("postgresql", "postgres"), 5432)
        return
    for host in netloc.split(","):
        _check_url(f"{scheme}://{host}/", ("postgresql", "postgres"), 5432)


def _mask_url(url: str) -> str:
    """Hide the password of a URL but keep host, port and database visible."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in creds else url


class SettingsError(UserFacingError):
    """A setting has a bad value; ``str()`` names every offending setting."""

    exit_code = 2

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in errors))


def _field_of(exc: Exception) -> str:
    text = str(exc)
    start = text.find('field "')
    return text[start + 7 : text.find('"', start + 7)] if start >= 0 else "settings"


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the TOML file (``config`` or MAILGATE_CONFIG) and the env.

    Raises :class:`SettingsError` naming each bad setting (e.g. ``http_listen``).
    """
    path = config or os.environ.get(f"{ENV_PREFIX}CONFIG") or None
    config_path = Path(path) if path else None
    if config_path is not None and not config_path.is_file():
        raise SettingsError([("config", f"no such file: {config_path}")])

    class _Loaded(Settings):
        config_file: ClassVar[Path | None] = config_path

    try:
        loaded = _Loaded(**overrides)
    except SourceError as exc:
        raise SettingsError([(_field_of(exc), str(exc))]) from None
    except ValidationError as exc:
        raise SettingsError(
            [
                (
                    ".".join(str(p) for p in err["loc"]) or "settings",
                    str(err["msg"]).removeprefix("Value error, "),
                )
                for err in exc.errors()
            ]
        ) from None
    return loaded


def reference_markdown() -> str:
    """The configuration reference table for the README, generated from the model."""
    lines = [
        "| setting | environment | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)" if name == "data_dir" else repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "unset" if field.default is None else str(field.default)
        env = f"`{ENV_PREFIX}{name.upper()}`"
        lines.append(f"| `{name}` | {env} | `{default}` | {field.description} |")
    return "\n".join(lines)


__all__ = [
    "ListenAddress",
    "Settings",
    "SettingsError",
    "load_settings",
    "parse_listen",
    "reference_markdown",
]
