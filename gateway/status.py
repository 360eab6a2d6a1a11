"""One operator's view of every running mailgate: ``mailgate status``, ``/api/status`` and
the dashboard read it from here.

Writing (each daemon, :class:`StatusReporter`, every ``status_interval_s``):

* ``mailgate:instance:{id}`` (string, JSON, TTL 3 intervals) and the ``mailgate:instances``
  set: the version, each component and whether it is ready, the gauges of interest from the
  process's metrics registry (IMAP watchers by state, pooled SMTP connections) and what each
  component chooses to tell through an optional ``status() -> dict`` method (ingest: the
  watchers in backoff with their last error; bounces: SMTP sessions open). A daemon that
  stops deletes its snapshot; one that dies is forgotten when the TTL runs out.
* ``mailgate:minute:{epoch minute}`` (hash, TTL 2 h): how much each sampled counter grew in
  that minute on any instance (jobs completed/failed, listener sessions and refusals, send
  results, bounces), so "the last hour" is the same figure whichever instance or CLI asks.

The gateway learns these through the metrics registry, Redis and the optional ``status``
method only: it imports none of ``ingest``, ``bounces``, ``delivery``.

Reading: :func:`collect_status` returns one dict, with ``healthy`` and the ``problems``
that make it false (a backend unreachable, no daemon reporting, a component not ready, no
live worker) and ``warnings`` that do not (dead letters, watchers in backoff, deep queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.jobs import ops
from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.components import Component

log = logging.getLogger(__name__)

INSTANCES: Final = "mailgate:instances"
MINUTE_TTL_S: Final = 2 * 3600
HOUR_MIN: Final = 60
# Seed 004's autoscaling threshold: a queue deeper than this wants another worker.
QUEUE_DEPTH_WARNING: Final = 1000
BACKOFF_LISTED: Final = 100

# Counters whose growth per minute is kept (metric sample names, as exposed).
SAMPLED: Final = (
    "jobs_completed_total",
    "jobs_failed_total",
    "jobs_dead_total",
    "smtp_sessions_total",
    "smtp_listener_rejections_total",
    "smtp_deliveries_total",
    "bounces_total",
)
# Gauges copied into the instance snapshot.
GAUGES: Final = ("imap_connections", "smtp_pool_connections")


def instance_key(instance: str) -> str:
    return f"mailgate:instance:{instance}"


def minute_key(minute: int) -> str:
    return f"mailgate:minute:{minute}"


def field_name(name: str, labels: dict[str, str]) -> str:
    """``name{k=v,...}`` (labels sorted): one hash field per counter series."""
    inner = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, _, rest = field.partition("{")
    labels = dict(item.split("=", 1) for item in rest.rstrip("}").split(",") if "=" in item)
    return name, labels


@runtime_checkable
class Reporting(Protocol):
    """A component that says more about itself than ``ready()`` (optional)."""

    def status(self) -> dict[str, Any]: ...


class StatusReporter:
    """Publishes this daemon's snapshot and counter growth to Redis (see the module doc)."""

    def __init__(
        self,
        app: App,
        components: Callable[[], Sequence[Component]],
        *,
        version: str,
        http: str,
        instance: str | None = None,
    ):
        self.app = app
        self.components = components
        self.version = version
        self.http = http
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.interval_s = app.settings.status_interval_s
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._last: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.report_once()
        self._task = asyncio.create_task(self._loop(), name="status-reporter")

    async def stop(self) -> None:
        """Record the last counter growth and withdraw the snapshot."""
        if self._task is not None:
            await cancel_and_wait([self._task])
        try:
            await asyncio.wait_for(self._publish_counters(), 2)
            async with self.app.redis.pipeline(transaction=True) as pipe:
                pipe.delete(instance_key(self.instance))
                pipe.zrem(INSTANCES, self.instance)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not withdraw the status snapshot: %s", exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.report_once()
            except (RedisError, OSError) as exc:
                log.warning("status report failed: %s", exc)

    def snapshot(self) -> dict[str, Any]:
        components = {}
        for component in self.components():
            entry: dict[str, Any] = {"ready": bool(component.ready())}
            if isinstance(component, Reporting):
                try:
                    entry["status"] = component.status()
                except Exception as exc:  # noqa: BLE001 - a report must not stop the daemon
                    entry["status"] = {"error": f"{type(exc).__name__}: {exc}"}
            components[component.name] = entry
        gauges: dict[str, Any] = {}
        for family in self.app.metrics.registry.collect():
            if family.name not in GAUGES:
                continue
            for sample in family.samples:
                if sample.labels:
                    gauges.setdefault(family.name, {})
                    label = next(iter(sample.labels.values()))
                    gauges[family.name][label] = sample.value
                else:
                    gauges[family.name] = sample.value
        return {
            "instance": self.instance,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "version": self.version,
            "http": self.http,
            "started_at": self.started_at,
            "reported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "stopping": self.stopping,
            "components": components,
            "gauges": gauges,
        }

    async def report_once(self) -> None:
        await self.app.metrics.refresh()
        body = json.dumps(self.snapshot(), default=str, separators=(",", ":"))
        ttl_ms = int(self.interval_s * 3000)
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.set(instance_key(self.instance), body, px=ttl_ms)
            pipe.zadd(INSTANCES, {self.instance: time.time()})
            # Forget instances whose snapshots expired long ago.
            pipe.zremrangebyscore(INSTANCES, "-inf", time.time() - 86400)
            await pipe.execute()
        await self._publish_counters()

    def _counters(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for family in self.app.metrics.registry.collect():
            for sample in family.samples:
                if sample.name in SAMPLED:
                    values[field_name(sample.name, dict(sample.labels))] = sample.value
        return values

    async def _publish_counters(self) -> None:
        current = self._counters()
        grown = {
            f: v - self._last.get(f, 0.0) for f, v in current.items() if v > self._last.get(f, 0.0)
        }
        if not grown:
            return
        key = minute_key(int(time.time() // 60))
        async with self.app.redis.pipeline(transaction=True) as pipe:
            for f, delta in grown.items():
                pipe.hincrbyfloat(key, f, delta)
            pipe.expire(key, MINUTE_TTL_S)
            await pipe.execute()
        self._last = current


# -- reading -------------------------------------------------------------------------------


async def instances(redis: aioredis.Redis) -> list[dict[str, Any]]:
    """The snapshots of the daemons reporting now, oldest started first."""
    found: list[Any] = await redis.zrange(INSTANCES, 0, -1)
    members = [ops.text(m) for m in found]
    if not members:
        return []
    bodies = await redis.mget([instance_key(m) for m in members])
    now = dt.datetime.now(dt.UTC)
    out = []
    for body in bodies:
        if body is None:
            continue
        snap = json.loads(body)
        with contextlib.suppress(ValueError, KeyError):
            reported = dt.datetime.fromisoformat(snap["reported_at"])
            snap["report_age_s"] = round((now - reported).total_seconds(), 1)
        out.append(snap)
    return sorted(out, key=lambda s: str(s.get("started_at")))


async def minute_series(redis: aioredis.Redis, minutes: int = HOUR_MIN) -> list[dict[str, Any]]:
    """The counter growth of each of the last ``minutes`` minutes (oldest first), as
    ``{"minute": ISO time, "fields": {field: growth}}``."""
    now_min = int(time.time() // 60)
    span = range(now_min - minutes + 1, now_min + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for m in span:
            pipe.hgetall(minute_key(m))
        replies = await pipe.execute()
    series = []
    for m, reply in zip(span, replies, strict=True):
        fields = {ops.text(k): float(v) for k, v in reply.items()}
        at = dt.datetime.fromtimestamp(m * 60, dt.UTC).isoformat(timespec="minutes")
        series.append({"minute": at, "fields": fields})
    return series


def total_by(series: list[dict[str, Any]], metric: str, label: str | None = None) -> Any:
    """The growth of ``metric`` over ``series``: a number, or a dict by ``label``."""
    by: dict[str, float] = defaultdict(float)
    total = 0.0
    for point in series:
        for f, v in point["fields"].items():
            name, labels = parse_field(f)
            if name != metric:
                continue
            total += v
            if label is not None:
                by[labels.get(label, "")] += v
    if label is None:
        return round(total)
    return {k: round(v) for k, v in sorted(by.items())}


def throughput(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs completed and failed per minute (the dashboard's chart)."""
    return [
        {
            "minute": p["minute"],
            "completed": total_by([p], "jobs_completed_total"),
            "failed": total_by([p], "jobs_failed_total"),
        }
        for p in series
    ]


def _watchers(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    by_state: dict[str, int] = defaultdict(int)
    backoff: list[dict[str, Any]] = []
    for snap in snapshots:
        for state, n in (snap.get("gauges", {}).get("imap_connections") or {}).items():
            by_state[state] += int(n)
        ingest = snap.get("components", {}).get("ingest", {}).get("status") or {}
        for entry in ingest.get("backoff", []):
            backoff.append({**entry, "instance": snap.get("instance")})
    return {"by_state": dict(sorted(by_state.items())), "backoff": backoff[:BACKOFF_LISTED]}


def _listener(snapshots: list[dict[str, Any]], hour: list[dict[str, Any]]) -> dict[str, Any]:
    sessions_open = 0
    for snap in snapshots:
        bounces = snap.get("components", {}).get("bounces", {}).get("status") or {}
        sessions_open += int(bounces.get("sessions_open", 0))
    return {
        "sessions_open": sessions_open,
        "last_hour_sessions": total_by(hour, "smtp_sessions_total", "result"),
        "last_hour_refusals": total_by(hour, "smtp_listener_rejections_total", "cause"),
    }


def _delivery(snapshots: list[dict[str, Any]], hour: list[dict[str, Any]]) -> dict[str, Any]:
    connections = sum(
        int(snap.get("gauges", {}).get("smtp_pool_connections") or 0) for snap in snapshots
    )
    return {
        "pool_connections": connections,
        "last_hour": total_by(hour, "smtp_deliveries_total", "result"),
    }


async def _check_postgres(db: asyncpg.Pool | None) -> str:
    if db is None:
        return "error: no connection"
    try:
        async with asyncio.timeout(3):
            async with db.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure is reported as the state
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


async def collect_status(
    db: asyncpg.Pool | None, redis: aioredis.Redis, *, version: str, db_error: str = ""
) -> dict[str, Any]:
    """Everything ``mailgate status`` shows, with ``healthy`` and the ``problems``
    (``db`` None: PostgreSQL could not be reached, ``db_error`` says why)."""
    problems: list[str] = []
    warnings: list[str] = []
    pg = f"error: {db_error}"[:300] if db is None and db_error else await _check_postgres(db)
    out: dict[str, Any] = {
        "version": version,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backends": {"postgres": pg, "redis": "ok"},
    }
    if out["backends"]["postgres"] != "ok":
        problems.append(f"PostgreSQL: {out['backends']['postgres']}")
    try:
        async with asyncio.timeout(5):
            snapshots = await instances(redis)
            depths = await ops.queue_depths(redis)
            workers = await ops.live_workers(redis)
            hour = await minute_series(redis)
    except (RedisError, OSError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
        out["backends"]["redis"] = f"error: {type(exc).__name__}: {reason}"[:300]
        problems.append(f"Redis: {out['backends']['redis']}")
        out.update(healthy=False, problems=problems, warnings=warnings)
        return out

    if not snapshots:
        problems.append("no mailgate daemon is reporting (is `mailgate run` running?)")
    for snap in snapshots:
        for name, comp in snap.get("components", {}).items():
            if not comp.get("ready"):
                problems.append(f"component {name} on {snap.get('instance')} is not ready")
    if not workers:
        problems.append("no live worker: queued jobs are not running")
    if depths["dead"]:
        warnings.append(f"{depths['dead']} dead letter(s) (`mailgate dlq list`)")
    for name, queue in depths["queues"].items():
        if queue["waiting"] > QUEUE_DEPTH_WARNING:
            warnings.append(f"{name}: {queue['waiting']} waiting (over {QUEUE_DEPTH_WARNING})")
    watchers = _watchers(snapshots)
    if watchers["backoff"]:
        warnings.append(f"{len(watchers['backoff'])} IMAP watcher(s) in backoff")
    out.update(
        healthy=not problems,
        problems=problems,
        warnings=warnings,
        instances=[
            {
                k: snap.get(k)
                for k in ("instance", "hostname", "pid", "version", "http", "started_at")
            }
            | {
                "report_age_s": snap.get("report_age_s"),
                "components": {
                    n: ("ready" if c.get("ready") else "not ready")
                    for n, c in snap.get("components", {}).items()
                },
            }
            for snap in snapshots
        ],
        queues=depths,
        workers=[
            {
                k: w.get(k)
                for k in (
                    "worker_id",
                    "status",
                    "heartbeat_age_s",
                    "in_flight",
                    "jobs_processed",
                    "jobs_failed",
                )
            }
            for w in workers
        ],
        watchers=watchers,
        listener=_listener(snapshots, hour),
        delivery=_delivery(snapshots, hour),
        jobs_last_hour={
            "completed": total_by(hour, "jobs_completed_total"),
            "failed": total_by(hour, "jobs_failed_total"),
            "dead_lettered": total_by(hour, "jobs_dead_total"),
        },
    )
    return out
