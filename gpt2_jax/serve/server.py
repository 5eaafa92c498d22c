"""Running the app: compiling batch shapes before serving, the listening socket,
uvicorn, and a server in a background thread for tests and benchmarks."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

from gpt2_jax.serve.batcher import batch_rows
from gpt2_jax.serve.connections import http_protocol

READ_TIMEOUT = 10.0  # seconds a client has to send a whole request (--read-timeout)

if TYPE_CHECKING:
    import uvicorn


def warm_up(classifier, max_batch: int) -> int:
    """Compile every program the batcher's calls can need before the first request does
    (else the first requests of each shape wait for XLA): calls of 1 .. ``max_batch``
    texts of any lengths, repeats included, each with its ``batch_rows``. The shapes come
    from the classifier's own planning (``classifier.warm_shapes``): packed rows per row
    width, rows computed and texts read; full-width rows; chunked documents' groups.
    Returns the number of shapes."""
    from gpt2_jax.classifier.warm_shapes import warm_up as compile_shapes

    return compile_shapes(
        classifier, {n: batch_rows(n, max_batch) for n in range(1, max_batch + 1)}
    )


BACKLOG = 2048  # connections the kernel queues before the app takes them


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` but not yet listening (``port`` 0: a free one,
    see ``getsockname()``): a port in use fails here, at once, while clients are refused
    until ``sock.listen(BACKLOG)`` (the server listens only once it can answer)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as create_server does
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one, see ``getsockname()``)."""
    sock = bind(host, port)
    sock.listen(BACKLOG)
    return sock


def uvicorn_server(
    app,
    sock: socket.socket,
    log_level: str = "warning",
    access_log: bool = False,
    max_connections: int | None = None,
    read_timeout: float = READ_TIMEOUT,
) -> uvicorn.Server:
    """uvicorn for ``app`` on ``sock``; over ``max_connections`` open connections, new
    ones get 503 at once, and a request not received whole within ``read_timeout``
    seconds gets 408 and its connection closed, so slow clients cannot lock others out
    (``connections.http_protocol``)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            lifespan="on",
            http=http_protocol(read_timeout, max_connections),
        )
    )


class ServerThread:
    """Serve ``app`` on ``host``, a free port, from a background thread (tests and
    benchmarks): ``with ServerThread(app) as url: ...``; stopped on exit."""

    def __init__(
        self,
        app,
        host: str = "127.0.0.1",
        start_timeout: float = 60.0,
        max_connections: int | None = None,
        read_timeout: float = READ_TIMEOUT,
    ):
        self.app, self.host, self.start_timeout = app, host, start_timeout
        self.max_connections, self.read_timeout = max_connections, read_timeout
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> str:
        sock = listen(self.host, 0)
        self.server = uvicorn_server(
            self.app, sock, max_connections=self.max_connections, read_timeout=self.read_timeout
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return f"http://{self.host}:{sock.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        assert self.server is not None and self.thread is not None  # set by __enter__
        self.server.should_exit = True
        self.thread.join(30)
