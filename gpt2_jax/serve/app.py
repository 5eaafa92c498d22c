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
    parse_texts,
    read_body,
    results,
)
from gpt2_jax.serve.server import ServerThread, listen, uvicorn_server, warm_up

__all__ = [  # names the tests, commands and experiments import from here
    "EXAMPLES",
    "BadRequest",
    "Limits",
    "ServerThread",
    "check_content_type",
    "listen",
    "make_app",
    "page_examples",
    "page_html",
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


def make_app(
    classifier, facts: dict, limits: Limits = DEFAULT_LIMITS, batcher: MicroBatcher | None = None
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
