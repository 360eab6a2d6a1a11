"""The job envelope producers push, parsed without losing anything.

A job is a JSON object with ``id`` and ``payload``; ``max_attempts`` (default 5),
``attempt_count`` (default 0), ``queue_name``, ``created_at`` and ``idempotency_key`` are
optional, and unknown fields are kept. The raw bytes taken from Redis are kept too: they
are the identity of the job in the processing list (LREM removes exactly them).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_ATTEMPTS = 5
KNOWN_FIELDS = frozenset(
    {
        "id",
        "payload",
        "max_attempts",
        "attempt_count",
        "queue_name",
        "created_at",
        "idempotency_key",
    }
)


class MalformedJob(ValueError):
    """The bytes on a queue are not a job: not JSON, not an object, or no id/payload."""


@dataclass(frozen=True)
class Job:
    """One job as taken from a queue."""

    id: str
    payload: dict[str, Any]
    raw: bytes
    queue: str
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    attempt_count: int = 0
    queue_name: str | None = None
    created_at: str | None = None
    idempotency_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def attempt(self) -> int:
        """The number of the attempt now running (1 for the first)."""
        return self.attempt_count + 1

    @property
    def tenant_id(self) -> str | None:
        tenant = self.payload.get("tenant_id")
        return str(tenant) if tenant is not None else None

    def to_dict(self, **changes: Any) -> dict[str, Any]:
        """The envelope as JSON-ready data (unknown fields preserved), with ``changes``."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            id=self.id,
            payload=self.payload,
            max_attempts=self.max_attempts,
            attempt_count=self.attempt_count,
        )
        for name in ("queue_name", "created_at", "idempotency_key"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(changes)
        return out

    def encode(self, **changes: Any) -> bytes:
        return json.dumps(self.to_dict(**changes), separators=(",", ":")).encode()


def _int_field(obj: dict[str, Any], name: str, default: int, minimum: int) -> int:
    value = obj.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedJob(f"{name} must be an integer, got {type(value).__name__}")
    try:
        number = int(value)
    except ValueError:
        raise MalformedJob(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise MalformedJob(f"{name} must be >= {minimum}, got {number}")
    return number


def parse_job(raw: bytes, queue: str) -> Job:
    """Parse the bytes taken from ``queue``; raises :class:`MalformedJob` with the reason."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedJob(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedJob(f"not a JSON object but {type(obj).__name__}")
    job_id = obj.get("id")
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    if not isinstance(job_id, str) or not job_id or len(job_id) > 512:
        raise MalformedJob("missing or invalid 'id' (a non-empty string of at most 512 chars)")
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise MalformedJob("missing or invalid 'payload' (must be a JSON object)")
    optional: dict[str, str | None] = {}
    for name in ("queue_name", "created_at", "idempotency_key"):
        value = obj.get(name)
        optional[name] = None if value is None else str(value)
    return Job(
        id=job_id,
        payload=payload,
        raw=raw,
        queue=queue,
        max_attempts=_int_field(obj, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1),
        attempt_count=_int_field(obj, "attempt_count", 0, 0),
        extra={k: v for k, v in obj.items() if k not in KNOWN_FIELDS},
        **optional,
    )


def new_job(payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A new envelope with an id and the defaults filled in (for `mailgate enqueue`)."""
    job: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "max_attempts": DEFAULT_MAX_ATTEMPTS,
        "attempt_count": 0,
        "created_at": utc_now_iso(),
    }
    job.update(fields)
    job["payload"] = payload
    return job


def backoff_delay_s(
    attempts: int,
    *,
    base_s: float = 1.0,
    cap_s: float = 300.0,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Delay before the retry after ``attempts`` failed attempts: ``min(2^n s, cap)`` plus
    up to ``jitter`` (10 %) of it, so retries of a burst do not come back in lockstep."""
    delay = min((2.0**attempts) * base_s, cap_s)
    r = (rng or random).random()
    return delay * (1.0 + jitter * r)


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
