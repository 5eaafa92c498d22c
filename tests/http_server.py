"""A file server on 127.0.0.1 for download tests; records what was requested."""
from __future__ import annotations

import contextlib
import http.server
import threading
from pathlib import Path


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root`` over HTTP on a free port; yields ``(base_url, requests_log)``."""
    log: list[tuple[str, str]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def send_head(self):
            log.append((self.command, self.path))
            return super().send_head()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
