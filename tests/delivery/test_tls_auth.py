"""STARTTLS with a test CA and AUTH with the account's sealed password, and the rate
limiter holding across two processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import dkim

from delivery.jobs import create_handler
from gateway.app import App
from gateway.services import Services
from tests.delivery.conftest import TENANT, World, seed
from tests.delivery.peer import ScriptedPeer, make_test_ca


async def test_starttls_and_auth_with_the_accounts_password(app: App, tmp_path: Path) -> None:
    """The account's STARTTLS endpoint is verified against the test CA and the decrypted
    password logs in; the message arrives."""
    ca = make_test_ca(tmp_path)
    peer = await ScriptedPeer(tls=ca.server_context, users={"ops": "s3cret"}).start()
    app.settings = app.settings.model_copy(update={"delivery_tls_ca_file": ca.ca_file})
    try:
        keys = await seed(app, peer.port, security="starttls", username="ops", password="s3cret")
        world = World(app, peer, keys, Services(app))
        handler = create_handler(app, world.services)
        job = world.job(world.payload("ada@example.net"))
        result = await handler.run(job, handler.parse(job.payload))
        assert result["status"] == "sent"
        assert peer.auth_ok == ["ops"] and len(peer.messages) == 1
    finally:
        await world.services.aclose()
        await peer.stop()


CHILD = """
import asyncio, sys
import redis.asyncio as aioredis
from delivery.ratelimit import RateLimiter, Window
async def main():
    r = aioredis.Redis.from_url(sys.argv[1])
    lim = RateLimiter(r)
    admitted = 0
    for _ in range(40):
        a = await lim.acquire([Window("domain", "two.example", 25, 60.0)])
        admitted += a.admitted
    print(admitted)
    await r.aclose()
asyncio.run(main())
"""


async def test_rate_limit_holds_across_two_processes(redis_url: str) -> None:
    """Two processes asking 40 times each for a 25/minute window get 25 admissions in all."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, redis_url, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(out.decode()) for out, _ in outs) == 25


async def test_large_limits_are_paced(app: App) -> None:
    """A 120/minute window admits at most a sixth (20) in any 5 s, and says when the next
    one fits; small limits are not paced (a 30/minute window admits 30 at once)."""
    from delivery.ratelimit import RateLimiter, Window

    now = [1_000_000.0]
    limiter = RateLimiter(app.redis, clock=lambda: now[0])
    big = [Window("domain", "big.example", 120, 60.0)]
    admitted = [(await limiter.acquire(big)).admitted for _ in range(40)]
    assert admitted.count(True) == 20 and admitted[:20] == [True] * 20
    refused = await limiter.acquire(big)
    assert 4.9 < refused.wait_s <= 5.2 and refused.limit == "domain:big.example/5s"
    now[0] += refused.wait_s
    assert (await limiter.acquire(big)).admitted
    small = [Window("domain", "small.example", 30, 60.0)]
    assert [(await limiter.acquire(small)).admitted for _ in range(31)].count(True) == 30


async def test_mailgate_send_prints_the_servers_answer(world: World) -> None:
    """`mailgate send` (a subprocess) sends one signed message from the account with flags
    and prints the server's reply; a refused recipient exits 1 with the refusal."""
    from tests.daemon import mailgate_env

    env = mailgate_env(
        world.app.settings,
        0,
        secret_key=world.app.settings.secret_key.get_secret_value(),
    )
    base = [sys.executable, "-m", "gateway.cli", "send", "--tenant", TENANT, "--account", "acct_1"]

    async def send(to: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *base,
            "--to",
            to,
            "--subject",
            "hi",
            "--text",
            "hello there",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await send("ada@example.net")
    assert code == 0 and "<~  250" in out and "2 DKIM" in out, out
    [got] = world.peer.messages
    assert got.rcpt_tos == ["ada@example.net"] and b"hello there" in got.content
    assert dkim.DKIM(got.content).verify(dnsfunc=world.dns)
    world.peer.script.rcpt["nobody@example.net"] = "550 5.1.1 no such user"
    code, out = await send("nobody@example.net")
    assert code == 1 and "550 5.1.1 no such user" in out, out
