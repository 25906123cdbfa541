"""The relay of a live partition fault, on 127.0.0.1 in one process (no services)."""

from __future__ import annotations

import socket

import pytest
import trio

from scitokens_batch.live._relay import Relay


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # the relay reset the connection (the callee's side of a partition)


async def _broken(stream: trio.SocketStream) -> bool:
    """The connection is reset (or closed) instead of echoing."""
    try:
        await stream.send_all(b"ping")
        return await stream.receive_some(4) == b""
    except trio.BrokenResourceError:
        return True


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_relay_forwards_cuts_open_connections_refuses_and_heals() -> None:
    """Bytes go through; at the partition an open connection is reset and a new one is reset
    at once; after healing a new connection works again; the relay's port is closed when its
    task ends."""

    async def main() -> None:
        server = trio.socket.from_stdlib_socket(_listen())
        relay = Relay("a", "b", target_port=server.getsockname()[1], sock=_listen())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, _echo, [trio.SocketListener(server)])
            nursery.start_soon(relay.serve)
            with trio.fail_after(10):
                conn = await trio.open_tcp_stream("127.0.0.1", relay.port)
                await conn.send_all(b"ping")
                assert await conn.receive_some(4) == b"ping"
                relay.partition()
                assert await _broken(conn)
                fresh = await trio.open_tcp_stream("127.0.0.1", relay.port)
                assert await _broken(fresh)
                relay.heal()
                again = await trio.open_tcp_stream("127.0.0.1", relay.port)
                await again.send_all(b"pong")
                assert await again.receive_some(4) == b"pong"
            nursery.cancel_scope.cancel()
        relay.sock.close()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", relay.port)

    trio.run(main)
