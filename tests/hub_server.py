"""A stand-in for the Hugging Face Hub on 127.0.0.1: the file routes that
``huggingface_hub.hf_hub_download`` uses, for one or more repos, and the routes that
``HfApi.create_repo`` and ``upload_folder`` use to make a repo and commit to it.

``repos = {"owner/name": {"commit": 40 hex digits, "files": {name: bytes}}}``. A file
is asked for with ``HEAD`` then ``GET /{repo}/resolve/{revision}/{name}``; ``revision``
is ``main`` or the commit. Answers carry the headers the library requires
(``X-Repo-Commit``, an ``ETag``, ``Content-Length``), and misses carry the
``X-Error-Code`` it reads (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
Every request is logged as ``(method, path)``.

Uploads (every file is answered "regular", so the content comes base64 in the commit,
with no LFS): ``POST /api/repos/create`` adds ``repos[id] = {"commit", "files": {},
"private"}`` (409 if it exists); ``POST /api/validate-yaml`` parses a README's front
matter; ``POST /api/models/{id}/preupload/main``; ``POST /api/models/{id}/commit/main``
(NDJSON) adds the files under a new commit and keeps the request's ``Authorization``
header in ``repos[id]["authorization"]``. A POST without that header gets 401. Each connection times out after 10 s.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import threading
import urllib.parse

import yaml


@contextlib.contextmanager
def serve_hub(repos: dict):
    """Yields ``(endpoint URL, log)``."""
    log: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a stuck client cannot hold the server

        def do_POST(self):
            path = urllib.parse.urlsplit(self.path).path
            log.append((self.command, path))
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self.headers.get("Authorization"):  # as the Hub: writing needs a token
                return self._json({"error": "Invalid credentials in Authorization header"}, 401)
            parts = path.lstrip("/").split("/")
            if path == "/api/repos/create":
                return self._create(json.loads(body))
            if path == "/api/validate-yaml":
                return self._validate(json.loads(body)["content"])
            repo = "/".join(parts[2:4])
            if parts[:2] != ["api", "models"] or len(parts) < 6 or repo not in repos:
                return self._miss(404, "RepoNotFound")
            if parts[4] == "preupload":
                files = [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in json.loads(body)["files"]
                ]
                return self._json({"files": files})
            if parts[4] == "commit":
                return self._commit(repo, body)
            return self._miss(404, "EntryNotFound")

        def _create(self, payload):
            repo = f"{payload['organization']}/{payload['name']}"
            if repo in repos:
                return self._json({"error": "You already created this model repo"}, 409)
            private = payload.get("visibility", "public") == "private" or payload.get("private")
            repos[repo] = {"commit": "0" * 40, "files": {}, "private": bool(private)}
            return self._json({"url": f"http://{self.headers['Host']}/{repo}"})

        def _validate(self, content: str):
            head = content.split("---")[1] if content.startswith("---") else ""
            try:
                meta = yaml.safe_load(head)
            except yaml.YAMLError as err:
                return self._json({"errors": [{"message": str(err)}]}, 400)
            if not isinstance(meta, dict):
                return self._json({"errors": [{"message": "no metadata"}]}, 400)
            return self._json({"warnings": []})

        def _commit(self, repo: str, body: bytes):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            files = repos[repo]["files"]
            for line in lines:
                if line["key"] == "file":
                    value = line["value"]
                    assert value["encoding"] == "base64"
                    files[value["path"]] = base64.b64decode(value["content"])
            commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
            repos[repo]["commit"] = commit
            repos[repo]["authorization"] = self.headers.get("Authorization")
            url = f"http://{self.headers['Host']}/{repo}/commit/{commit}"
            return self._json({"commitUrl": url, "commitOid": commit})

        def _json(self, value, code: int = 200):
            data = json.dumps(value).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
    server.daemon_threads = True
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
