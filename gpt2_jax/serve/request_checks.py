"""The checks of a ``/classify`` request: its Content-Type, its body (read with a size
limit) and its texts; anything wrong is a ``BadRequest`` with the HTTP status and a
message for the client. Also the JSON form of a prediction's results."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gpt2_jax.data.texts import text_problem


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
    return parse_request(body, limits, refused_substrings)[0]


def parse_request(
    body: bytes, limits: Limits, refused_substrings=(), labels: int = 2
) -> tuple[list[str], float | str | None]:
    """``(texts, threshold)`` of a ``/classify`` body ``{"texts": [...]}`` with an optional
    ``"threshold"``: a probability, or ``"argmax"`` (None: not given, the server's own);
    only for a classifier of two ``labels``. ``BadRequest`` naming what is wrong."""
    data = _json_of(body)
    texts = _texts_of(data, limits)
    for i, text in enumerate(texts):
        _check_text(i, text, refused_substrings)
    if "threshold" not in data:
        return texts, None
    t = data["threshold"]
    if labels != 2:
        raise BadRequest(
            422, f'"threshold" is for a classifier of two labels; this one has {labels}'
        )
    number = isinstance(t, (int, float)) and not isinstance(t, bool)
    if not (t == "argmax" or (number and 0 <= t <= 1)):
        raise BadRequest(
            422,
            f'"threshold" must be a probability in [0, 1] or "argmax", got {_kind(t)} '
            f"({json.dumps(t)[:40]})",
        )
    return texts, t


def _json_of(body: bytes):
    """The body parsed as JSON, or ``BadRequest`` (400) saying why not."""
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
    return data


def _texts_of(data, limits: Limits) -> list:
    """``data["texts"]`` if ``data`` is ``{"texts": [...]}`` within ``limits``."""
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
    extra = sorted(k for k in data if k not in ("texts", "threshold"))
    if extra:
        raise BadRequest(422, f'unknown key(s) {extra}: the body takes "texts" (and "threshold")')
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
    return texts


def _check_text(i: int, text, refused_substrings) -> None:
    """``texts[i]`` is a string that ``data.texts.text_problem`` (the one rule for the API,
    ``classify`` and the server) accepts."""
    if not isinstance(text, str):
        raise BadRequest(
            422, f"texts[{i}] is {_kind(text)} ({json.dumps(text)[:40]}), not a string"
        )
    problem = text_problem(text, refused_substrings)
    if problem is not None:
        raise BadRequest(422, f"texts[{i}] {problem}")


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
