"""Serve a trained classifier on this machine: a web page and a JSON API.

    python -m experiments.serve --run runs/spam-124M-...            # http://127.0.0.1:8000
    python -m experiments.serve --run DIR --port 8080 --max-texts 16

Open the address in a browser: type a message, press Classify, see the label and every
class's probability, plus the run's facts (model size, labels, test accuracy and recall
from metrics.json). The API:

    POST /classify  {"texts": ["first message", "second"]}
                    -> {"labels": [...], "results": [{"label": "spam",
                        "probs": {"ham": 0.01, "spam": 0.99}, "truncated": false}, ...]}
    GET  /health    -> {"status": "ok"}
    GET  /info      -> labels, model size, metrics, limits, batching counts

Results equal experiments.classify's for the same texts. Requests that arrive within
--batch-wait-ms of each other are classified in one call (--no-batching: one call per
request, for comparison). A client has --read-timeout seconds to send a whole request
(else 408); over --max-connections, new connections get 503. A bad request gets a 4xx with {"error": "..."} saying what is
wrong; texts longer than the classifier's max_length tokens are cut to them and
flagged "truncated": true. Needs the serve extra: pip install -e ".[serve]".
"""

from __future__ import annotations

import argparse
import sys
import time

from gpt2_jax.commands.common import InputError, load, one_line, threshold_arg, with_threshold
from gpt2_jax.util.compile_cache import FLAG_HELP, use_compile_cache
from gpt2_jax.util.runtime import keep_freed_memory


def parser() -> argparse.ArgumentParser:
    # One flat list of the server's flags in --help order: long, but read top to bottom.
    p = argparse.ArgumentParser(
        prog="python -m experiments.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        required=True,
        metavar="DIR",
        help="run folder written by experiments.spam (holds classifier.json)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to listen on (default 8000; 0 picks a free one)",
    )
    p.add_argument(
        "--max-texts",
        type=int,
        default=64,
        metavar="N",
        help="most texts in one request (default 64); more gets 413",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        metavar="N",
        help="largest request body (default 1048576); larger gets 413 unread",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="how long to collect requests for one call (default 5)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=32,
        metavar="N",
        help="most texts in one call (default 32); the warm-up covers every call of up to N "
        "texts: each doubling of N adds about 6 programs to compile (a tiny classifier: 21 "
        "at 64, 45 at 1024)",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="one call per request (the baseline batching is measured against)",
    )
    p.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile every program the batched calls can need before listening (with "
        "the compilation cache warm a restart loads them; connections are refused "
        "meanwhile); --no-warm-up: start at once, and the first requests of each shape "
        "wait for XLA",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=256,
        metavar="N",
        help="open connections at most; more get 503 at once (default 256)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a whole request, headers and body (default 10); "
        "after them it gets 408 and its connection is closed, so slow clients cannot "
        "hold --max-connections",
    )
    p.add_argument(
        "--decision-threshold",
        type=threshold_arg,
        metavar="P|argmax",
        help="two classes: the second class when its probability is at least P, instead of "
        "the run's saved threshold; argmax: the most probable class. A request can still "
        'give its own ("threshold" in the JSON body)',
    )
    p.add_argument("--access-log", action="store_true", help="print a line per request")
    p.add_argument("--no-compile-cache", action="store_true", help=FLAG_HELP)
    return p


def check_args(p: argparse.ArgumentParser, args) -> None:
    for flag in ("max_texts", "max_body_bytes", "max_batch", "max_connections"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in 0..65535, got {args.port}")
    if not 0 < args.read_timeout <= 3600:
        p.error(f"--read-timeout must be in (0, 3600] seconds, got {args.read_timeout}")
    if not 0 <= args.batch_wait_ms <= 1000:
        p.error(f"--batch-wait-ms must be in 0..1000, got {args.batch_wait_ms}")


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    keep_freed_memory()
    use_compile_cache(not args.no_compile_cache, min_compile_secs=0.0)  # the warm-up's, all
    try:
        from gpt2_jax.serve.app import Limits, bind, make_app, run_facts
        from gpt2_jax.serve.batcher import MicroBatcher
    except ImportError as err:
        print(
            f'error: serving needs the serve extra ({one_line(err)}): pip install -e ".[serve]"',
            file=sys.stderr,
        )
        return 1
    try:
        classifier = with_threshold(load(args.run), args.decision_threshold)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        sock = bind(args.host, args.port)  # listens once warmed up (_serve)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {one_line(err)}", file=sys.stderr)
        return 1
    batcher = MicroBatcher(
        lambda texts, rows: classifier.predict(texts, batch_size=rows),
        max_batch=args.max_batch,
        wait_ms=args.batch_wait_ms,
        enabled=not args.no_batching,
    )
    app = make_app(
        classifier,
        run_facts(args.run, classifier),
        Limits(max_texts=args.max_texts, max_body_bytes=args.max_body_bytes),
        batcher,
    )
    return _serve(args, classifier, sock, app, batcher)


def _serve(args, classifier, sock, app, batcher) -> int:
    """Compile first if asked, then listen, say where, and serve until stopped."""
    from gpt2_jax.serve.app import BACKLOG, uvicorn_server

    if args.warm_up:
        try:
            _warm_up(classifier, args.max_batch)
        except KeyboardInterrupt:
            sock.close()
            print("stopped during the warm-up", file=sys.stderr)
            return 130
        except ValueError as err:
            sock.close()
            print(f"error: warm-up: {one_line(err)}", file=sys.stderr)
            return 1
    sock.listen(BACKLOG)  # only now: connections made during the warm-up are refused
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"note: listening on {host}: other machines can reach this server", file=sys.stderr)
    print(
        f"serving {classifier!r} on http://{shown}:{port} "
        f"({'batching' if batcher.enabled else 'no batching'}; Ctrl-C stops)",
        flush=True,
    )
    server = uvicorn_server(
        app,
        sock,
        log_level="info" if args.access_log else "warning",
        max_connections=args.max_connections,
        read_timeout=args.read_timeout,
        access_log=args.access_log,
    )
    try:
        server.run(sockets=[sock])  # Ctrl-C / SIGTERM: uvicorn finishes, then re-raises it
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _warm_up(classifier, max_batch: int) -> None:
    """Compile what the batched calls can need, saying so before and after."""
    from gpt2_jax.serve.app import warm_up

    print(
        f"warming up: compiling what calls of up to {max_batch} texts need "
        "(--no-warm-up starts at once) ...",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    shapes = warm_up(classifier, max_batch)
    print(f"compiled {shapes} shapes in {time.perf_counter() - started:.1f} s", file=sys.stderr)
