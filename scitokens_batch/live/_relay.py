"""The relays of a live ``partition`` fault: real TCP between two actors that can be cut.

Each directed link ``caller -> callee`` named by a partition gets one relay owned by the runner:
a socket on 127.0.0.1 that the caller's service connects to instead of the callee's port (its
HTTP client's ``connect_via``, ``transport/http.py``; URLs, ``Host`` and TLS names unchanged, so
the TLS session is end to end and the relay sees only ciphertext), and that copies bytes both
ways. When the partition begins, every connection open on the link is reset (RST to both ends,
``SO_LINGER`` 0), and new connections are accepted and reset at once, as behind a firewall
rule that rejects with a TCP reset, until the partition ends.

Why relays and not network namespaces with veth pairs: they work without root, on any kernel,
inside containers that forbid ``unshare``; they act on exactly the links the scenario names
(a namespace per actor would also need every socket bound by the runner moved into it); and
they are stopped with the run's event loop, so nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import attrs
import trio

__all__ = ["Relay"]

#: Bytes copied per read.
CHUNK = 64 << 10


def _reset(stream: trio.SocketStream) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a broken path is seen by the peer."""
    with contextlib.suppress(OSError):  # already closed: nothing to reset
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


@attrs.define(eq=False)
class Relay:
    """One directed link ``caller -> callee``: listens on ``sock``, forwards to ``target_port``.

    Attributes:
        cut: the partition is in effect (connections are reset).
    """

    caller: str
    callee: str
    target_port: int
    sock: socket.socket
    cut: bool = False
    #: the pairs of streams open on this link
    _open: set[tuple[trio.SocketStream, trio.SocketStream]] = attrs.field(
        factory=set, alias="_open"
    )

    @property
    def port(self) -> int:
        """The relay's own port (what the caller connects to)."""
        port: int = self.sock.getsockname()[1]
        return port

    async def serve(self) -> None:
        """Accept and relay until cancelled (then every connection is closed)."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._relay, stream)
            finally:
                for a, b in list(self._open):
                    _reset(a)
                    _reset(b)
                await listener.aclose()

    def partition(self) -> None:
        """Cut the link: reset what is open, and every new connection until :meth:`heal`."""
        self.cut = True
        for a, b in list(self._open):
            _reset(a)
            _reset(b)

    def heal(self) -> None:
        """Let connections through again."""
        self.cut = False

    async def _relay(self, down: trio.SocketStream) -> None:
        if self.cut:
            _reset(down)
            return
        try:
            up = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            _reset(down)  # the callee is down: the caller sees its connection fail too
            return
        pair = (down, up)
        self._open.add(pair)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_copy, down, up, nursery.cancel_scope)
                nursery.start_soon(_copy, up, down, nursery.cancel_scope)
        finally:
            self._open.discard(pair)
            for s in pair:
                if s.socket.fileno() != -1:
                    s.socket.close()


async def _copy(src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
    """Copy ``src`` to ``dst`` until EOF (passed on as a half-close) or an error (both end)."""
    try:
        while True:
            data = await src.receive_some(CHUNK)
            if not data:
                await dst.send_eof()
                return
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        scope.cancel()
