"""Connections the server cannot be locked out by: a deadline for reading each request
(headers and body) and a limit on open connections, both answered in the API's JSON form.

uvicorn bounds neither the time a client may take to send its headers nor its body, so
clients that send half a request and wait would hold their connections for ever and, with
``--max-connections`` full, every other client would get 503. ``http_protocol`` builds
uvicorn's h11 protocol with both bounds: a request not received whole within
``read_timeout`` seconds gets 408 and its connection is closed (its slot is free again);
a connection over ``max_connections`` gets 503 and is closed. Once a request has been
read, the time its classification takes is not limited here.
"""

from __future__ import annotations

import json


def error_body(message: str) -> bytes:
    """``{"error": message}``, the body of every error the server sends."""
    return json.dumps({"error": message}).encode("utf-8")


def raw_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, closing the connection."""
    body = error_body(message)
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def over_the_limit(max_connections: int):
    """The ASGI app a connection over ``max_connections`` is answered by: 503 in JSON."""
    body = error_body(
        f"the server has {max_connections} open connections, its --max-connections; "
        "try again in a moment"
    )

    async def refuse(scope, receive, send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"retry-after", b"1"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return refuse


# A little over 60 lines: the protocol class is defined inside so that it closes over
# this server's limits and prepared responses (uvicorn takes a class, not an instance).
def http_protocol(read_timeout: float, max_connections: int | None):
    """uvicorn's h11 protocol class with a read deadline per request and a connection
    limit (``None``: no limit); give it as ``uvicorn.Config(http=...)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if not read_timeout > 0:
        raise ValueError(f"read_timeout must be positive, got {read_timeout!r}")
    timed_out = raw_response(
        408,
        "Request Timeout",
        f"the request was not received whole within {read_timeout:g} s (the server's "
        "--read-timeout); send it at once",
    )
    refuse = over_the_limit(max_connections) if max_connections is not None else None
    limit = max_connections if max_connections is not None else float("inf")

    class DeadlineProtocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if refuse is not None and len(self.connections) > limit:
                self.app = refuse  # this connection's requests get 503
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection has its own deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(read_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if not cycle.more_body or cycle.response_started:
                    return  # read whole (or answered already): the app's time, not ours
            elif self.conn.our_state is not h11.IDLE or (
                self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]
            ):  # nothing of a new request yet: close without a word
                self.transport.close()
                return
            self.transport.write(timed_out)
            self.transport.close()  # connection_lost frees the slot and tells the app

    return DeadlineProtocol
