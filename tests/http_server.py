"""A file server on 127.0.0.1 for download tests: honours Range requests, records what
was asked, and misbehaves on demand.

``faults[url_path]`` is a list of misbehaviours, one used per GET of that path:
``"cut"`` (announce the whole length, send half, close), ``"500"``, ``"404"``,
``"slow"`` (say nothing for ``slow_s`` seconds, then close), ``"short-length"``
(announce and send 100 bytes fewer than the file has).
"""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
import time
from pathlib import Path


@contextlib.contextmanager
def serve(
    root: Path, faults: dict[str, list[str]] | None = None, ranges: bool = True, slow_s: float = 3.0
):
    """Serve ``root`` on a free port; yields ``(base_url, log)`` with ``log`` a list of
    ``(method, path, range header or None)``."""
    log: list[tuple[str, str, str | None]] = []
    faults = faults if faults is not None else {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            asked = self.headers.get("Range")
            log.append((self.command, self.path, asked))
            fault = faults[self.path].pop(0) if body and faults.get(self.path) else None
            path = root / self.path.lstrip("/")
            if fault == "404" or not path.is_file():
                return self._status(404)
            if fault == "500":
                return self._status(500)
            if fault == "slow":
                time.sleep(slow_s)
                self.close_connection = True
                return
            data = path.read_bytes()
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if ranges and match:
                start = int(match.group(1))
                if start >= len(data):
                    return self._status(416)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            payload = data[start:]
            if fault == "short-length":
                payload = payload[:-100]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            if fault == "cut":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _status(self, code: int):
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
