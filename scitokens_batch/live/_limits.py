"""Connection limits of a live service: hypercorn's server loop with a per-client-address cap.

hypercorn has timeouts (TLS handshake, idle keep-alive, which also ends a connection that never
completes its request head) but no limit on how many connections one client may hold, and a
process has a fixed number of descriptors (``ulimit -n``; 1,024 is a common soft limit). At
that limit ``accept`` fails with ``EMFILE``: trio's ``serve_listeners`` then sleeps and retries,
so the server survives, but every new client waits until a descriptor frees. An ASGI-level cap
cannot help: the app sees a connection only once its request head has arrived, and the
descriptor is spent at ``accept``. So the cap sits in the accept loop: a connection from an
address that already holds ``per_address`` is closed at once, before the TLS handshake, and
costs a descriptor for microseconds only.

One more gap is closed here: hypercorn keeps a connection open, with no idle timer, when the app
answered before reading the whole request body (a refused or timed-out upload) and the client
keeps sending or stalls (its reader then waits on the app's full queue for ever).
:func:`serve_limited` ends such a connection as soon as the app is done with that request.

:func:`serve_limited` is hypercorn 0.18's ``trio.run.worker_serve`` reduced to what a service
needs (TCP listeners, the lifespan, a shutdown trigger), with each listener wrapped in
:class:`CappedListener`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio

__all__ = ["CappedListener", "serve_limited"]

#: Seconds the last piece of an answer may take to go out while the client is still sending
#: a request body nobody will read (then the connection is ended).
FINAL_SEND_SECONDS = 2.0


@attrs.define(eq=False)
class CappedListener(trio.abc.Listener[trio.SocketStream]):
    """A socket listener that holds at most ``per_address`` open connections per peer address.

    Args:
        inner: the listener accepting the TCP connections.
        per_address: the cap.
    """

    inner: trio.SocketListener
    per_address: int
    #: open connections by peer address (pruned of closed ones at each accept)
    _open: dict[str, list[trio.SocketStream]] = attrs.field(factory=dict, alias="_open")
    #: connections closed at accept because their address was at the cap
    refused: int = attrs.field(default=0, init=False)

    async def accept(self) -> trio.SocketStream:
        """The next connection whose address is under the cap (others are closed at once)."""
        while True:
            stream = await self.inner.accept()
            try:
                address = str(stream.socket.getpeername()[0])
            except OSError:
                await stream.aclose()  # gone already
                continue
            held = [s for s in self._open.get(address, ()) if s.socket.fileno() != -1]
            if len(held) >= self.per_address:
                self.refused += 1
                await stream.aclose()
                self._open[address] = held
                continue
            held.append(stream)
            self._open[address] = held
            return stream

    async def aclose(self) -> None:
        """Close the listening socket."""
        await self.inner.aclose()


def _peer(stream: Any) -> tuple[str, int] | None:
    """``(address, port)`` of an accepted stream (TLS or not)."""
    raw = getattr(stream, "transport_stream", stream)
    try:
        host, port = raw.socket.getpeername()[:2]
    except (AttributeError, OSError):
        return None
    return str(host), int(port)


async def serve_limited(
    app: Any,
    config: Any,
    *,
    per_address: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
) -> None:
    """Serve ``app`` with hypercorn (``config``) until ``shutdown_trigger`` returns.

    Args:
        app: the ASGI app.
        config: a ``hypercorn.config.Config`` (binds, TLS, timeouts).
        per_address: open connections allowed per client address.
        shutdown_trigger: returns when the server should stop (then ``graceful_timeout``).
    """
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import wrap_app

    #: each open connection's cancel scope, by client (address, port)
    connections: dict[tuple[str, int], trio.CancelScope] = {}

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # hypercorn keeps a connection whose request body was not read to its end (an upload
        # refused early, or timed out) for as long as the client keeps it: its reader blocks
        # on the app's full queue, with no timer. Once the app is done with such a request,
        # the connection is ended (its handler cancelled: the socket is closed).
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        announced = headers.get(b"content-length", b"0") not in (b"", b"0")
        done = not (announced or b"transfer-encoding" in headers)

        async def tracked() -> Any:
            nonlocal done
            event = await receive()
            if event["type"] == "http.disconnect" or not event.get("more_body", False):
                done = True
            return event

        async def final_send(event: dict[str, Any]) -> None:
            if done or event["type"] != "http.response.body" or event.get("more_body", False):
                await send(event)
                return
            # The end of an answer while the request body is still coming: hypercorn hands
            # the app a disconnect through the same bounded queue the unread body fills, and
            # would wait for room there for ever. Take what arrives meanwhile, briefly.
            async with trio.open_nursery() as nursery:

                async def discard() -> None:
                    with trio.move_on_after(FINAL_SEND_SECONDS):
                        while not done:
                            await tracked()

                nursery.start_soon(discard)
                with trio.move_on_after(FINAL_SEND_SECONDS):
                    await send(event)
                nursery.cancel_scope.cancel()

        try:
            await app(scope, tracked, final_send)
        finally:
            client = scope.get("client")
            if not done and client is not None:
                cancel = connections.get((str(client[0]), int(client[1])))
                if cancel is not None:
                    cancel.cancel()

    wrapped = wrap_app(guarded, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)

    async def handle(stream: Any) -> None:
        peer = _peer(stream)
        with trio.CancelScope() as cancel:
            if peer is not None:
                connections[peer] = cancel
            try:
                await TCPServer(wrapped, config, context, ConnectionState(state.copy()), stream)
            finally:
                if peer is not None and connections.get(peer) is cancel:
                    del connections[peer]
                if cancel.cancel_called:
                    await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            ssl_context = config.create_ssl_context()
            listeners: list[trio.abc.Listener[Any]] = []
            for sock in sockets.secure_sockets:
                sock.listen(config.backlog)
                cap = CappedListener(
                    trio.SocketListener(trio.socket.from_stdlib_socket(sock)), per_address
                )
                listeners.append(trio.SSLListener(cap, ssl_context, https_compatible=True))
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(
                    CappedListener(
                        trio.SocketListener(trio.socket.from_stdlib_socket(sock)), per_address
                    )
                )
            async with trio.open_nursery() as nursery:
                serve = partial(trio.serve_listeners, handler_nursery=server_nursery)
                nursery.start_soon(serve, handle, listeners)
                await shutdown_trigger()
                nursery.cancel_scope.cancel()
            await context.terminated.set()
            server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
