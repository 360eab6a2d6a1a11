"""The shared clients of :mod:`gateway.app`."""

from __future__ import annotations

from gateway.app import App


async def test_the_app_client_round_trips(app: App) -> None:
    """Through the app's client: values, a script's arguments and a two-word command."""
    await app.redis.set("client:k", "é" * 10)
    assert (await app.redis.get("client:k")).decode() == "é" * 10
    got = await app.redis.eval("return {ARGV[1], ARGV[2], ARGV[3]}", 0, b"\x00\xff", 7, 2.5)
    assert got == [b"\x00\xff", b"7", b"2.5"]
    assert "maxmemory" in str(await app.redis.config_get("maxmemory"))
