"""A trained classifier over HTTP: the page, ``POST /classify``, ``GET /health``, ``GET /info``.

``make_app(classifier, facts, limits, batching)`` builds a Starlette app (run it with
uvicorn; ``experiments.serve`` is the command line). Requests are checked here and
refused with a 4xx and ``{"error": "..."}`` that says what is wrong; only valid texts
reach the ``MicroBatcher``, which classifies texts of concurrent requests in one call.
Nothing a client sends can stop the server: every failure becomes a JSON response.

The page (``web/index.html``) is one file with its own CSS and plain JavaScript, so
it works on a machine without internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpt2_jax.finetune.examples import read_examples
from gpt2_jax.finetune.record import RunRecord
from gpt2_jax.serve.batcher import MicroBatcher, batch_rows

if TYPE_CHECKING:
    import uvicorn

EXAMPLES = (
    "WINNER!! You have been selected to receive a £900 prize reward! To claim call "
    "09061701461 now. Claim code KL341. Valid 12 hours only.",
    "URGENT! Your mobile number has won a free trip to Spain. Text WIN to 80086 to claim.",
    "Hey, are we still meeting for lunch tomorrow at 12?",
    "Sorry I missed your call, I'll ring you back after work.",
    "Ok lar... Joking wif u oni...",
)


@dataclass(frozen=True)
class Limits:
    """What one request may hold: bodies over ``max_body_bytes`` are refused before
    they are parsed, lists over ``max_texts`` before anything is classified."""

    max_texts: int = 64
    max_body_bytes: int = 1 << 20

    def __post_init__(self):
        for name in ("max_texts", "max_body_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


# --------------------------------------------------------------------------- facts


def run_facts(run_dir: str | Path, classifier) -> dict:
    """What the page shows about the run: labels, pooling, max length, model size and,
    from ``metrics.json`` if the run has one, test accuracy and per-class recall of the
    epoch whose weights were saved."""
    spec = classifier.spec
    m = spec.model
    n_params = int(sum(int(np.prod(np.shape(x))) for x in _leaves(classifier.params)))
    facts = {
        "run": Path(run_dir).resolve().name,
        "labels": list(spec.labels),
        "pool": spec.pool,
        "max_length": spec.max_length,
        "truncate": spec.truncate,
        "model": {
            "parameters": n_params,
            "n_layers": m.n_layers,
            "n_heads": m.n_heads,
            "emb_dim": m.emb_dim,
            "context_length": m.context_length,
            "vocab_size": m.vocab_size,
        },
    }
    facts["metrics"], facts["metrics_note"] = saved_metrics(
        Path(run_dir) / "metrics.json", spec.labels
    )
    facts["examples"] = page_examples(run_dir, spec.labels)
    return facts


def page_examples(run_dir: str | Path, labels) -> list[str]:
    """The run's own validation texts (``examples.json``); a run saved before they were
    kept shows the SMS examples if it is a spam/ham classifier, else none."""
    texts = read_examples(run_dir)
    if texts is not None:
        return texts
    return list(EXAMPLES) if tuple(labels) == ("ham", "spam") else []


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def saved_metrics(path: Path, labels) -> tuple[dict | None, str]:
    """``(metrics, note)``: test accuracy, n and per-class recall of the saved epoch
    (``selected.epoch``, else the last with a test split), or ``None`` and why not.
    A missing or damaged file is a note, not an error: the classifier works without it."""
    if not path.is_file():
        return None, "no metrics.json in the run folder"
    try:
        return _saved_metrics(RunRecord.read(path), labels)
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as err:
        return None, f"metrics.json unreadable ({type(err).__name__})"


def _saved_metrics(report: RunRecord, labels) -> tuple[dict | None, str]:
    epochs = report.epochs
    chosen = report.selected.epoch if report.selected else None
    epoch = next((e for e in epochs if e.get("epoch") == chosen), None) if chosen else None
    if epoch is None or "test" not in epoch:
        epoch = next((e for e in reversed(epochs) if "test" in e), None)
    if epoch is None or not isinstance(epoch.get("test"), dict):
        return None, "metrics.json has no test results"
    test = epoch["test"]
    per_class = test.get("per_class") or {}
    recall = {
        name: _number(per_class.get(name, {}).get("recall", test.get(f"{name}_accuracy")))
        for name in labels
    }
    return (
        {
            "epoch": epoch.get("epoch"),
            "test_accuracy": _number(test.get("accuracy")),
            "test_n": test.get("n"),
            "recall": recall,
        },
        "test split of metrics.json",
    )


def _number(x):
    """A JSON-safe float (NaN, e.g. recall of a class without test examples -> None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- requests


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def check_content_type(header: str | None) -> None:
    """JSON, or no Content-Type at all (curl -d without -H sends form encoding: 415)."""
    if header is None:
        return
    media = header.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise BadRequest(
            415,
            f"Content-Type is {media or 'empty'}; send the texts as JSON "
            "with Content-Type: application/json",
        )


def parse_texts(body: bytes, limits: Limits, refused_substrings=()) -> list[str]:
    """The texts of a ``/classify`` body ``{"texts": [str, ...]}``, or ``BadRequest``
    naming what is wrong and where (``texts[3]``)."""
    if not body.strip():
        raise BadRequest(400, 'the body is empty; send a JSON object {"texts": ["..."]}')
    try:
        data = json.loads(body)
    except UnicodeDecodeError as err:
        raise BadRequest(
            400, f"the body is not UTF-8 text (byte {err.start + 1}); send UTF-8 JSON"
        ) from None
    except json.JSONDecodeError as err:
        raise BadRequest(
            400, f"the body is not JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number, arrays 1,000 deep
        kind = "nested too deeply" if isinstance(err, RecursionError) else "a number too long"
        raise BadRequest(
            400, f'the body is JSON this server does not read ({kind}); send {{"texts": ["..."]}}'
        ) from None
    if not isinstance(data, dict):
        raise BadRequest(
            422, f'the body must be a JSON object {{"texts": ["..."]}}, got {_kind(data)}'
        )
    if "texts" not in data:
        raise BadRequest(
            422,
            'no "texts" key: send {"texts": ["..."]}'
            + (f" (got keys {sorted(data)})" if data else ""),
        )
    extra = sorted(k for k in data if k != "texts")
    if extra:
        raise BadRequest(422, f'unknown key(s) {extra}: the body takes only "texts"')
    texts = data["texts"]
    if not isinstance(texts, list):
        hint = ' (one text goes in a list: ["..."])' if isinstance(texts, str) else ""
        raise BadRequest(422, f'"texts" must be a list of strings, got {_kind(texts)}{hint}')
    if not texts:
        raise BadRequest(422, '"texts" is an empty list; give at least one text')
    if len(texts) > limits.max_texts:
        raise BadRequest(
            413,
            f"{len(texts)} texts in one request; at most {limits.max_texts} "
            "(the server's --max-texts)",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(
                422, f"texts[{i}] is {_kind(text)} ({json.dumps(text)[:40]}), not a string"
            )
        if not text.strip():
            raise BadRequest(
                422, f"texts[{i}] is empty or only white space; give some text to classify"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate such as "\ud800"
            raise BadRequest(
                422,
                f"texts[{i}] has an unpaired surrogate at character "
                f"{err.start + 1}: not valid Unicode text",
            ) from None
        for bad in refused_substrings:
            if bad in text:
                raise BadRequest(
                    422,
                    f"texts[{i}] contains {bad!r}, a special token the "
                    "tokenizer does not accept inside a text",
                )
    return texts


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit`` bytes: from
    Content-Length before reading, else while it streams in. Never parsed here."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(400, f"Content-Length is {declared!r}, not a number") from None
        if size > limit:
            raise BadRequest(
                413, f"the body is {size} bytes; at most {limit} (the server's --max-body-bytes)"
            )
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    stream = request.stream()
    while True:
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except ClientDisconnect:  # the client left half-way: nobody to answer, nothing to log
            raise BadRequest(400, "the client disconnected before sending the whole body") from None
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over {limit} bytes (the server's --max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def results(pred) -> list[dict]:
    """One ``{"label", "probs": {class: p}, "truncated"}`` per text."""
    return [
        {
            "label": label,
            "probs": {name: float(p) for name, p in zip(pred.class_names, row)},
            "truncated": bool(cut),
        }
        for label, row, cut in zip(pred.labels, pred.probs, pred.truncated)
    ]


# --------------------------------------------------------------------------- app


def page_html() -> str:
    return resources.files("gpt2_jax.serve").joinpath("web/index.html").read_text("utf-8")


def make_app(
    classifier, facts: dict, limits: Limits = Limits(), batcher: MicroBatcher | None = None
):
    """The Starlette app. ``batcher`` defaults to a batching ``MicroBatcher`` over
    ``classifier.predict``; it is started and stopped with the app (its lifespan)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    if batcher is None:
        batcher = MicroBatcher(lambda texts, rows: classifier.predict(texts, batch_size=rows))
    refused = tuple(getattr(classifier.tokenizer, "special_tokens_set", ()))
    page = page_html()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request):
        return HTMLResponse(page)

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def info(request: Request):
        return JSONResponse(
            {
                **facts,
                "limits": asdict(limits),
                "batching": {
                    "enabled": batcher.enabled,
                    "max_batch": batcher.max_batch,
                    "wait_ms": batcher.wait_ms,
                    **batcher.stats.to_dict(),
                },
            }
        )

    async def classify(request: Request):
        try:
            check_content_type(request.headers.get("content-type"))
            body = await read_body(request, limits.max_body_bytes)
            texts = parse_texts(body, limits, refused)
        except BadRequest as err:
            return error(err.status, str(err))
        started = time.perf_counter()
        pred = await asyncio.wrap_future(batcher.submit(texts))
        return JSONResponse(
            {
                "labels": list(pred.class_names),
                "results": results(pred),
                "max_length": classifier.spec.max_length,
                "seconds": time.perf_counter() - started,
            }
        )

    async def http_error(request: Request, exc: HTTPException):
        message = {
            404: f"no page {request.url.path}; try /, /classify, /health or /info",
            405: f"{request.method} is not allowed on {request.url.path}"
            + (" (use POST with JSON)" if request.url.path == "/classify" else ""),
        }.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, message)

    async def server_error(request: Request, exc: Exception):
        return error(
            500, f"the server failed on this request: {type(exc).__name__}: {str(exc)[:200]}"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/info", info),
            Route("/classify", classify, methods=["POST"]),
        ],
        # Starlette types every handler as taking any Exception, but calls one registered
        # for HTTPException only with an HTTPException
        exception_handlers={HTTPException: http_error, Exception: server_error},  # type: ignore[dict-item]
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # /classify/ is a 404, not a redirect built from Host
    app.state.batcher = batcher
    return app


# --------------------------------------------------------------------------- running


def warm_up(classifier, max_batch: int) -> int:
    """Compile every batch shape the batcher can use before the first request needs it
    (else the first requests of each shape wait for XLA): rows 1, 2, 4 .. ``max_batch``
    times each length bucket up to ``max_length``. Returns the number of shapes."""
    from gpt2_jax.data.batches import bucket_length
    from gpt2_jax.model.pooling import reads_padding

    spec = classifier.spec
    widths: dict[int, str] = {}  # bucket width -> a text that needs it
    for n in range(1, spec.max_length + 1):
        text = "a" + " a" * (n - 1)
        tokens = len(classifier.tokenizer.encode(text))
        width = (
            spec.max_length
            if reads_padding(spec.pool, spec.model.causal)
            else bucket_length(min(tokens, spec.max_length), spec.max_length)
        )
        widths.setdefault(width, text)
    rows = sorted({batch_rows(n, max_batch) for n in range(1, max_batch + 1)})
    for r in rows:
        for text in widths.values():
            classifier.predict([text] * r, batch_size=r)
    return len(rows) * len(widths)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one, see ``getsockname()``)."""
    return socket.create_server(
        (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=2048
    )


def uvicorn_server(
    app,
    sock: socket.socket,
    log_level: str = "warning",
    access_log: bool = False,
    max_connections: int | None = None,
) -> uvicorn.Server:
    """uvicorn for ``app`` on ``sock``; over ``max_connections`` open connections, new
    ones get 503 at once (uvicorn's ``limit_concurrency``), so a flood of slow clients
    cannot exhaust the server."""
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
            limit_concurrency=max_connections,
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
    ):
        self.app, self.host, self.start_timeout = app, host, start_timeout
        self.max_connections = max_connections
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> str:
        sock = listen(self.host, 0)
        self.server = uvicorn_server(self.app, sock, max_connections=self.max_connections)
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
