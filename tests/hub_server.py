"""A stand-in for the Hugging Face Hub on 127.0.0.1: the file routes that
``huggingface_hub.hf_hub_download`` uses, for one or more repos.

``repos = {"owner/name": {"commit": 40 hex digits, "files": {name: bytes}}}``. A file
is asked for with ``HEAD`` then ``GET /{repo}/resolve/{revision}/{name}``; ``revision``
is ``main`` or the commit. Answers carry the headers the library requires
(``X-Repo-Commit``, an ``ETag``, ``Content-Length``), and misses carry the
``X-Error-Code`` it reads (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
Every request is logged as ``(method, path)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
import urllib.parse


@contextlib.contextmanager
def serve_hub(repos: dict):
    """Yields ``(endpoint URL, log)``."""
    log: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            path = urllib.parse.urlsplit(self.path).path
            log.append((self.command, path))
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._miss(404, "RepoNotFound")
            repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo not in repos:
                return self._miss(404, "RepoNotFound")
            commit = repos[repo]["commit"]
            if revision not in ("main", commit):
                return self._miss(404, "RevisionNotFound")
            data = repos[repo]["files"].get(name)
            if data is None:
                return self._miss(404, "EntryNotFound", commit)
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _miss(self, code: int, error: str, commit: str | None = None):
            message = f'{{"error": "{error}"}}'.encode()
            self.send_response(code)
            self.send_header("X-Error-Code", error)
            self.send_header("X-Error-Message", error)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(message)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
