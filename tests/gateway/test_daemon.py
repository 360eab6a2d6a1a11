"""The daemon's lifecycle in-process: HTTP endpoints, component stop order and deadlines,
forced stop on a second request, systemd notifications."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import App
from gateway.components import Component, ComponentError, select
from gateway.daemon import GC_YOUNG_THRESHOLD, Daemon
from gateway.settings import Settings
from gateway.systemd import Notifier


class SlowComponent:
    """A component whose in-flight work takes ``work_s`` and honours the stop deadline."""

    needs = ()

    def __init__(self, name: str, work_s: float, log: list[str]):
        self.name = name
        self.work_s = work_s
        self.log = log
        self.started = False
        self.cancelled = False

    async def start(self) -> None:
        self.started = True
        self.log.append(f"start {self.name}")

    async def stop(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self.log.append(f"stop {self.name}")
        work = asyncio.create_task(asyncio.sleep(self.work_s))
        try:
            await asyncio.wait_for(asyncio.shield(work), timeout=max(0.0, deadline - loop.time()))
            self.log.append(f"drained {self.name}")
        except TimeoutError:
            work.cancel()
            self.cancelled = True
            self.log.append(f"cancelled {self.name}")
        except asyncio.CancelledError:
            work.cancel()
            self.cancelled = True
            self.log.append(f"forced {self.name}")
            raise

    def ready(self) -> bool:
        return self.started


@contextlib.asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(daemon.run(install_signals=False))
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()
    assert started in done, "daemon did not start within 30 s"
    try:
        yield task
    finally:
        if not task.done():
            daemon.request_stop()
            await asyncio.wait_for(task, 60)


async def test_http_endpoints(settings: Settings) -> None:
    """/healthz answers 200, /readyz 200 with checks, /metrics names the seed metrics."""
    daemon = Daemon(settings, factories={})
    async with running(daemon):
        assert daemon.http is not None
        base = f"http://127.0.0.1:{daemon.http.bound_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
                assert (await r.json())["status"] == "ok"
            async with http.get(f"{base}/readyz") as r:
                body = await r.json()
                assert r.status == 200, body
                assert body["postgres"] == "ok" and body["redis"] == "ok"
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
    for name in ("jobs_completed_total", "jobs_failed_total", "job_duration_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in text or f"# TYPE {name}" in text


async def test_start_up_heap_is_frozen_out_of_the_collector(settings: Settings) -> None:
    """Once the components run, what start-up built is frozen and young collections are
    rarer (see settle_heap); restored afterwards for the rest of this test process."""
    before = gc.get_threshold()
    gc.unfreeze()
    daemon = Daemon(settings, factories={"a": lambda app, services: SlowComponent("a", 0, [])})
    try:
        async with running(daemon):
            assert gc.get_freeze_count() > 1000
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_components_drain_within_the_grace_period(settings: Settings) -> None:
    """Components stop in reverse start order; work shorter than the grace drains."""
    log: list[str] = []
    comps = {"a": SlowComponent("a", 0.05, log), "b": SlowComponent("b", 0.05, log)}
    factories = {k: (lambda app, services, c=c: c) for k, c in comps.items()}
    daemon = Daemon(settings, factories=factories)
    async with running(daemon) as task:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert log[:2] == ["start a", "start b"]
    assert log[2] == "stop b"
    assert {"drained a", "drained b"} <= set(log)


async def test_work_past_the_grace_is_cancelled(settings: Settings) -> None:
    """In-flight work longer than shutdown_grace_s is cancelled at the deadline."""
    fast = settings.model_copy(update={"shutdown_grace_s": 0.2})
    log: list[str] = []
    comp = SlowComponent("slow", 30, log)
    daemon = Daemon(fast, factories={"slow": lambda app, services: comp})
    async with running(daemon) as task:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        assert loop.time() - t0 < 10
    assert comp.cancelled


async def test_second_stop_request_forces(settings: Settings) -> None:
    """A second signal makes the deadline now, even with a long grace period."""
    log: list[str] = []
    comp = SlowComponent("slow", 30, log)
    daemon = Daemon(settings, factories={"slow": lambda app, services: comp})
    async with running(daemon) as task:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        daemon.request_stop()
        await asyncio.sleep(0.1)
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        assert loop.time() - t0 < 10
    assert comp.cancelled


async def test_readyz_is_503_until_components_are_ready(settings: Settings) -> None:
    """/readyz fails while a component reports not ready."""

    class NotReady(SlowComponent):
        def ready(self) -> bool:
            return False

    comp = NotReady("stuck", 0, [])
    daemon = Daemon(settings, factories={"stuck": lambda app, services: comp})
    async with running(daemon):
        assert daemon.http is not None
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{daemon.http.bound_port}/readyz"
            async with http.get(url) as r:
                assert r.status == 503
                assert (await r.json())["components"] == {"stuck": "not ready"}


async def test_systemd_notifications(settings: Settings, tmp_path: Path) -> None:
    """With NOTIFY_SOCKET, the daemon sends READY=1, WATCHDOG=1 and STOPPING=1."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    quick = settings.model_copy(update={"watchdog_interval_s": 0.05})
    daemon = Daemon(quick, factories={}, notifier=Notifier(path))
    try:
        async with running(daemon):
            await asyncio.sleep(0.2)
        received = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(sock.recv(4096).decode())
    finally:
        sock.close()
    states = [line for msg in received for line in msg.splitlines()]
    assert "READY=1" in states
    assert "WATCHDOG=1" in states
    assert states[-1] == "STOPPING=1" or "STOPPING=1" in states
    assert states.index("READY=1") < states.index("STOPPING=1")


async def test_stop_requested_while_a_component_starts_abandons_the_start(
    settings: Settings,
) -> None:
    """A start that hangs (a server not answering yet) does not make the daemon deaf to
    SIGTERM: the start is cancelled, what started is stopped, the exit is clean."""
    log: list[str] = []
    first = SlowComponent("first", 0, log)

    class Hanging(SlowComponent):
        async def start(self) -> None:
            self.log.append("start hanging")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.log.append("start cancelled")
                raise

    hanging = Hanging("hanging", 0, log)
    daemon = Daemon(
        settings,
        factories={"first": lambda app, services: first, "hanging": lambda app, services: hanging},
    )
    task = asyncio.create_task(daemon.run(install_signals=False))
    for _ in range(600):
        if "start hanging" in log:
            break
        await asyncio.sleep(0.05)
    daemon.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert not daemon.started.is_set()
    assert log[:3] == ["start first", "start hanging", "start cancelled"]
    assert {"stop first", "stop hanging"} <= set(log)


async def test_sigusr1_logs_every_tasks_stack(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGUSR1 logs the stack of every asyncio task: what a stuck daemon waits on."""
    daemon = Daemon(settings, factories={})
    task = asyncio.create_task(daemon.run(install_signals=True), name="the-daemon")
    await asyncio.wait_for(daemon.started.wait(), 30)
    with caplog.at_level("WARNING", logger="gateway.daemon"):
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):
            if any(r.getMessage() == "asyncio tasks (SIGUSR1)" for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    (record,) = [r for r in caplog.records if r.getMessage() == "asyncio tasks (SIGUSR1)"]
    stacks = record.__dict__["stacks"]
    assert "--- task the-daemon" in stacks and "_serve" in stacks
    daemon.request_stop()
    assert await asyncio.wait_for(task, 30) == 0


def test_unknown_component_is_a_clear_error() -> None:
    """Naming a component that is not installed fails with the installed list."""
    with pytest.raises(ComponentError, match="nosuch"):
        select(["nosuch"], {"worker": lambda app, services: _never(app)})
    assert select(["none"], {"worker": lambda app, services: _never(app)}) == {}


def _never(app: App) -> Component:
    raise AssertionError("factory must not be called")
