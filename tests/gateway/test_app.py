"""The shared clients of :mod:`gateway.app`: the Redis client packs commands in C."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from gateway.app import App, with_c_packer

_ARG = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)


@given(st.sampled_from(["EVALSHA", "SET", b"HSET", "CONFIG GET", b"CLIENT LIST"]), st.lists(_ARG))
def test_c_packer_writes_what_redis_py_writes(name: str | bytes, args: list[object]) -> None:
    """The same RESP bytes as redis-py's own packer, a multi-word command name included."""
    python, c = Connection(), with_c_packer(Connection)()
    assert b"".join(c.pack_command(name, *args)) == b"".join(python.pack_command(name, *args))


def test_what_hiredis_does_not_take_is_redis_pys() -> None:
    """A memoryview is packed (by redis-py's packer); None is refused as redis-py does."""
    c = with_c_packer(Connection)()
    assert b"".join(c.pack_command("SET", "k", memoryview(b"v"))) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    )
    with pytest.raises(DataError):
        c.pack_command("SET", "k", None)


def test_c_packer_keeps_the_connection_kind() -> None:
    """A unix-socket (or TLS) pool keeps its class; one packed subclass per class."""
    packed = with_c_packer(UnixDomainSocketConnection)
    assert issubclass(packed, UnixDomainSocketConnection)
    assert with_c_packer(UnixDomainSocketConnection) is packed


async def test_the_app_client_round_trips(app: App) -> None:
    """Through the app's client: values, a script's arguments and a two-word command."""
    assert app.redis.connection_pool.connection_class.pack_command is not (Connection.pack_command)
    await app.redis.set("packer:k", "é" * 10)
    assert (await app.redis.get("packer:k")).decode() == "é" * 10
    got = await app.redis.eval("return {ARGV[1], ARGV[2], ARGV[3]}", 0, b"\x00\xff", 7, 2.5)
    assert got == [b"\x00\xff", b"7", b"2.5"]
    assert "maxmemory" in str(await app.redis.config_get("maxmemory"))
