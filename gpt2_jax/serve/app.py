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
import time
from dataclasses import asdict
from importlib import resources

from gpt2_jax.serve.batcher import MicroBatcher
from gpt2_jax.serve.facts import EXAMPLES, page_examples, run_facts, saved_metrics
from gpt2_jax.serve.request_checks import (
    BadRequest,
    Limits,
    check_content_type,
    parse_request,
    parse_texts,
    read_body,
    results,
)
from gpt2_jax.serve.server import BACKLOG, ServerThread, bind, listen, uvicorn_server, warm_up

__all__ = [  # names the tests, commands and experiments import from here
    "EXAMPLES",
    "BadRequest",
    "Limits",
    "ServerThread",
    "check_content_type",
    "listen",
    "bind",
    "BACKLOG",
    "make_app",
    "page_examples",
    "page_html",
    "parse_request",
    "parse_texts",
    "read_body",
    "results",
    "run_facts",
    "saved_metrics",
    "uvicorn_server",
    "warm_up",
]

DEFAULT_LIMITS = Limits()


def page_html() -> str:
    return resources.files("gpt2_jax.serve").joinpath("web/index.html").read_text("utf-8")


def error(status: int, message: str):
    """The API's error form: ``{"error": message}`` with HTTP ``status``."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def make_app(
    classifier, facts: dict, limits: Limits = DEFAULT_LIMITS, batcher: MicroBatcher | None = None
):
    """The Starlette app. ``batcher`` defaults to a batching ``MicroBatcher`` over
    ``classifier.predict``; it is started and stopped with the app (its lifespan)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    if batcher is None:
        batcher = MicroBatcher(lambda texts, rows: classifier.predict(texts, batch_size=rows))
    page = page_html()

    async def index(request):
        return HTMLResponse(page)

    async def health(request):
        return JSONResponse({"status": "ok"})

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
            Route("/info", info_handler(facts, limits, batcher)),
            Route("/classify", classify_handler(classifier, limits, batcher), methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # /classify/ is a 404, not a redirect built from Host
    app.state.batcher = batcher
    return app


def info_handler(facts: dict, limits: Limits, batcher: MicroBatcher):
    """``GET /info``: the run's facts, the limits and the batcher's counts."""
    from starlette.responses import JSONResponse

    async def info(request):
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

    return info


def classify_handler(classifier, limits: Limits, batcher: MicroBatcher):
    """``POST /classify``: the request checked, its texts classified by ``batcher``."""
    from starlette.responses import JSONResponse

    refused = tuple(getattr(classifier.tokenizer, "special_tokens_set", ()))

    async def classify(request):
        try:
            check_content_type(request.headers.get("content-type"))
            body = await read_body(request, limits.max_body_bytes)
            texts, threshold = parse_request(
                body, limits, refused, len(classifier.labels), classifier.spec.multi_label
            )
        except BadRequest as err:
            return error(err.status, str(err))
        started = time.perf_counter()
        pred = await asyncio.wrap_future(batcher.submit(texts))
        if threshold is not None:  # this request's own decision on the same probabilities
            spec = classifier.spec.with_threshold(None if threshold == "argmax" else threshold)
            pred.labels = [pred.class_names[k] for k in spec.choose(pred.probs)]
        return JSONResponse(
            {
                "labels": list(pred.class_names),
                "results": results(pred),
                "max_length": classifier.spec.max_length,
                "seconds": time.perf_counter() - started,
            }
        )

    return classify


async def http_error(request, exc):
    """A Starlette ``HTTPException`` (404, 405, ...) in the API's error form."""
    message = {
        404: f"no page {request.url.path}; try /, /classify, /health or /info",
        405: f"{request.method} is not allowed on {request.url.path}"
        + (" (use POST with JSON)" if request.url.path == "/classify" else ""),
    }.get(exc.status_code, str(exc.detail))
    return error(exc.status_code, message)


async def server_error(request, exc: Exception):
    return error(500, f"the server failed on this request: {type(exc).__name__}: {str(exc)[:200]}")
