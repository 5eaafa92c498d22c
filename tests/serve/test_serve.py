"""experiments.serve: the page in a real browser, the JSON API, bad requests, batching
and a bounded load test. Servers listen on 127.0.0.1 only and stop inside the tests."""

import http.client
import json
import shutil
import signal
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from conftest import REPO

pytest.importorskip("starlette", reason="the serve extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")

from experiments.serve_bench import ServeProcess, run_load  # noqa: E402
from experiments.serve_screenshot import CHROMIUM, SPAM, chromium_page, classify_in_page  # noqa: E402
from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, save_classifier  # noqa: E402
from gpt2_jax.commands import classify as classify_cli  # noqa: E402
from gpt2_jax.commands import serve as serve_cli  # noqa: E402
from gpt2_jax.model.config import GPTConfig  # noqa: E402
from gpt2_jax.model.gpt import init_params  # noqa: E402
from gpt2_jax.serve.app import Limits, ServerThread, make_app, run_facts, warm_up  # noqa: E402
from gpt2_jax.serve.batcher import MicroBatcher, batch_rows  # noqa: E402

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=3
)
LABELS = ("ham", "spam", "promo")
MAX_LENGTH = 40
LONG = " ".join(["call now to claim your free prize, reply STOP to end"] * 6)  # > 40 tokens
TEXTS = [
    "Ok lar... Joking wif u oni...",
    SPAM,
    "hi",
    LONG,
    "Sorry, I'll call later",
    "Free entry in 2 a wkly comp to win FA Cup final tkts",
]
LIMITS = Limits(max_texts=8, max_body_bytes=4096)
ARTIFACTS = REPO / "tests" / "artifacts"
# metrics.json as experiments.spam writes it (the keys the page reads); epoch 2 was
# kept, so its figures, not the last epoch's, are the classifier's.
METRICS = {
    "status": "finished",
    "selected": {"epoch": 2, "by": "val_loss"},
    "epochs": [
        {
            "epoch": 1,
            "test": {
                "accuracy": 0.5,
                "n": 80,
                "per_class": {
                    "ham": {"recall": 0.5},
                    "spam": {"recall": 0.25},
                    "promo": {"recall": 0.75},
                },
            },
        },
        {
            "epoch": 2,
            "test": {
                "accuracy": 0.9625,
                "n": 80,
                "per_class": {
                    "ham": {"recall": 0.984375},
                    "spam": {"recall": 0.875},
                    "promo": {"recall": float("nan")},
                },
            },
        },
        {
            "epoch": 3,
            "test": {
                "accuracy": 0.7,
                "n": 80,
                "per_class": {
                    "ham": {"recall": 0.6},
                    "spam": {"recall": 0.7},
                    "promo": {"recall": 0.8},
                },
            },
        },
    ],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bpe_dir):
    spec = ClassifierConfig(model=CFG, labels=LABELS, pool="last-real", max_length=MAX_LENGTH)
    run = save_classifier(
        tmp_path_factory.mktemp("serve") / "run", init_params(CFG, seed=5), spec, bpe_dir=bpe_dir
    ).parent
    (run / "metrics.json").write_text(json.dumps(METRICS))  # NaN as JSON's NaN, as json writes
    return run


@pytest.fixture(scope="module")
def classifier(run_dir):
    return Classifier.load(run_dir)


@pytest.fixture(scope="module")
def server(classifier, run_dir):
    """``(url, app)`` of a batching server with small limits."""
    batcher = MicroBatcher(
        lambda texts, rows: classifier.predict(texts, batch_size=rows), max_batch=8
    )  # 8 clients in the load test: rows 1, 2, 4, 8
    app = make_app(classifier, run_facts(run_dir, classifier), LIMITS, batcher)
    warm_up(classifier, batcher.max_batch)
    with ServerThread(app) as url:
        yield url, app


def post(url, body, headers=None, path="/classify", method="POST"):
    """``(status, parsed JSON)``; ``body`` bytes are sent as they are, else as JSON."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def alone(classifier, text):
    """What ``Classifier.predict`` gives for ``text`` by itself."""
    pred = classifier.predict([text], batch_size=1)
    return pred.labels[0], pred.probs[0], bool(pred.truncated[0])


# ----------------------------------------------------------------- the API


def test_batch_of_texts_equals_predict_of_each_alone(server, classifier):
    url, _ = server
    status, got = post(url, {"texts": TEXTS})
    assert status == 200, got
    assert got["labels"] == list(LABELS) and len(got["results"]) == len(TEXTS)
    for text, r in zip(TEXTS, got["results"]):
        label, probs, truncated = alone(classifier, text)
        assert r["label"] == label and r["truncated"] == truncated
        assert list(r["probs"]) == list(LABELS)
        np.testing.assert_allclose([r["probs"][n] for n in LABELS], probs, atol=1e-6)
    assert [r["truncated"] for r in got["results"]] == [t == LONG for t in TEXTS]


def test_health_and_info(server, run_dir):
    url, _ = server
    with urllib.request.urlopen(url + "/health", timeout=30) as res:
        assert res.status == 200 and json.loads(res.read()) == {"status": "ok"}
    with urllib.request.urlopen(url + "/info", timeout=30) as res:
        info = json.loads(res.read())
    assert info["labels"] == list(LABELS) and info["max_length"] == MAX_LENGTH
    assert info["limits"] == {"max_texts": 8, "max_body_bytes": 4096}
    assert info["metrics"] == {
        "epoch": 2,
        "test_accuracy": 0.9625,
        "test_n": 80,
        "recall": {"ham": 0.984375, "spam": 0.875, "promo": None},
    }
    n_params = sum(
        int(np.prod(np.shape(x)))
        for x in __import__("jax").tree_util.tree_leaves(init_params(CFG, seed=5))
    )
    assert info["model"]["parameters"] == n_params and info["model"]["n_layers"] == 2


def test_facts_of_a_run_without_metrics(tmp_path, run_dir, classifier):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("metrics.json"))
    facts = run_facts(bare, classifier)
    assert facts["metrics"] is None and "no metrics.json" in facts["metrics_note"]
    for damaged in (
        "{not json",
        '{"epochs": 5}',
        '{"selected": "x", "epochs": []}',
        '{"epochs": [{"epoch": 1, "test": {"accuracy": "high"}}]}',
        '{"epochs": [{"epoch": 1, "test": {"per_class": {"ham": 0.5}}}]}',
    ):
        (bare / "metrics.json").write_text(damaged)
        facts = run_facts(bare, classifier)  # a note, never an error
        assert facts["metrics"] is None and "unreadable" in facts["metrics_note"], damaged


BAD_REQUESTS = [  # (body, extra headers, status, words the error must contain)
    (b'{"texts": ["a"', None, 400, "not JSON"),
    (b"", None, 400, "body is empty"),
    (b'{"texts": ["caf\xe9"]}', None, 400, "not UTF-8"),
    ({"text": ["hello"]}, None, 422, 'no "texts" key'),
    ({"texts": ["a"], "extra": 1}, None, 422, "unknown key(s) ['extra']"),
    (["hello"], None, 422, "must be a JSON object"),
    ({"texts": "hello"}, None, 422, "got a string (one text goes in a list"),
    ({"texts": []}, None, 422, "empty list"),
    ({"texts": ["ok", 3]}, None, 422, "texts[1] is a number (3), not a string"),
    ({"texts": ["ok", None]}, None, 422, "texts[1] is null"),
    ({"texts": ["ok", "   "]}, None, 422, "texts[1] is empty"),
    ({"texts": ["hi <|endoftext|>"]}, None, 422, "texts[0] contains '<|endoftext|>'"),
    ({"texts": ["x"] * 9}, None, 413, "9 texts in one request; at most 8"),
    ({"texts": ["x" * 5000]}, None, 413, "at most 4096"),
    ({"texts": ["a"]}, {"Content-Type": "text/plain"}, 415, "Content-Type is text/plain"),
    (b'{"texts": ' + b"[" * 1200 + b"]" * 1200 + b"}", None, 400, "nested too deeply"),
    (b'{"texts": ["ok \\ud800"]}', None, 422, "texts[0] has an unpaired surrogate"),
    ({"texts": ["a"], "threshold": 0.5}, None, 422, '"threshold" is for a classifier of two'),
]


@pytest.mark.parametrize(
    "body, headers, status, words", BAD_REQUESTS, ids=[f"{b[2]}-{b[3][:22]}" for b in BAD_REQUESTS]
)
def test_bad_request_gets_its_4xx_and_says_what(server, body, headers, status, words):
    url, _ = server
    got_status, got = post(url, body, headers)
    assert got_status == status and words in got["error"], got


def test_streamed_body_over_the_limit_is_refused_while_read(server):
    """Chunked (no Content-Length): counted as it arrives."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunks = iter([b'{"texts": ["', b"y" * 3000, b"y" * 3000, b'"]}'])
        conn.request(
            "POST", "/classify", chunks, {"Content-Type": "application/json"}, encode_chunked=True
        )
        res = conn.getresponse()
        assert res.status == 413 and "over 4096 bytes" in json.loads(res.read())["error"]
    finally:
        conn.close()


def test_wrong_paths_and_methods_get_json_errors(server):
    url, _ = server
    assert post(url, None, path="/nope", method="GET")[0] == 404
    status, got = post(url, None, method="GET")
    assert status == 405 and "use POST" in got["error"]
    status, got = post(url, {"texts": ["a"]}, path="/classify/", headers={"Host": "evil.example"})
    assert status == 404 and "error" in got  # no redirect built from the Host header


def test_server_still_answers_after_every_bad_request(server, classifier):
    url, _ = server
    for body, headers, _, _ in BAD_REQUESTS:
        post(url, body, headers)
    with urllib.request.urlopen(url + "/health", timeout=30) as res:
        assert res.status == 200
    status, got = post(url, {"texts": ["still here?"]})
    assert status == 200 and got["results"][0]["label"] == alone(classifier, "still here?")[0]


# ----------------------------------------------------------------- batching


def test_concurrent_requests_are_batched_and_equal_each_text_alone(classifier):
    """Requests of mixed lengths from 12 threads at once: fewer calls than requests,
    and every text's result equals Classifier.predict of it alone."""
    sizes = []

    def predict(texts, rows):
        sizes.append(len(texts))
        return classifier.predict(texts, batch_size=rows)

    texts = [TEXTS[i % len(TEXTS)][: 5 + 13 * i] for i in range(12)]
    start = threading.Barrier(len(texts))
    out = {}

    def client(i):
        start.wait(30)
        out[i] = batcher.predict([texts[i]], timeout=60)

    with MicroBatcher(predict, max_batch=32, wait_ms=50) as batcher:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert sorted(out) == list(range(len(texts)))
    assert sum(sizes) == len(texts) and len(sizes) < len(texts) and max(sizes) > 1
    for i, text in enumerate(texts):
        label, probs, truncated = alone(classifier, text)
        assert out[i].labels == [label] and out[i].truncated[0] == truncated
        np.testing.assert_allclose(out[i].probs[0], probs, atol=1e-6)


def test_one_failing_request_does_not_fail_the_others_batched_with_it(classifier):
    def predict(texts, rows):
        if "boom" in texts:
            raise ValueError("cannot classify boom")
        return classifier.predict(texts, batch_size=rows)

    with MicroBatcher(predict, wait_ms=200) as batcher:
        futures = [batcher.submit(["fine"]), batcher.submit(["boom"]), batcher.submit(["ok"])]
        assert futures[0].result(60).labels == [alone(classifier, "fine")[0]]
        with pytest.raises(ValueError, match="boom"):
            futures[1].result(60)
        assert futures[2].result(60).labels == [alone(classifier, "ok")[0]]
        assert batcher.predict(["after"], timeout=60).labels == [alone(classifier, "after")[0]]


def test_json_python_cannot_read_is_a_400():
    from gpt2_jax.serve.app import BadRequest, Limits, parse_texts

    with pytest.raises(BadRequest, match="a number too long") as err:
        parse_texts(b'{"texts": [' + b"9" * 5000 + b"]}", Limits())
    assert err.value.status == 400


def test_a_call_never_holds_more_than_max_batch_texts(classifier):
    sizes = []

    def predict(texts, rows):
        sizes.append(len(texts))
        return classifier.predict(texts, batch_size=rows)

    with MicroBatcher(predict, max_batch=4, wait_ms=300) as batcher:
        futures = [
            batcher.submit(["one", "two", "three"]),
            batcher.submit(["x"] * 3),
            batcher.submit(["last"]),
        ]
        for f, n in zip(futures, (3, 3, 1)):
            assert len(f.result(60).labels) == n
    assert sizes == [3, 4] or sizes == [3, 3, 1], sizes  # the second request opens a call
    assert max(sizes) <= 4


def test_batch_rows_are_powers_of_two_up_to_max_batch():
    assert [batch_rows(n, 32) for n in (1, 2, 3, 5, 8, 9, 31, 33, 100)] == [
        1,
        2,
        4,
        8,
        8,
        16,
        32,
        32,
        32,
    ]
    assert batch_rows(20, 24) == 24


def test_load_no_errors_and_figures_batched_vs_unbatched(server, classifier, run_dir):
    """8 clients x 50 requests each against a batching server and a one-call-per-request
    one; no request may fail. Speed is not asserted here (see experiments.serve_bench),
    only printed; batching must have served several requests per call."""
    url, app = server
    single = MicroBatcher(
        lambda texts, rows: classifier.predict(texts, batch_size=rows), enabled=False
    )
    unbatched_app = make_app(classifier, run_facts(run_dir, classifier), LIMITS, single)
    results = {}
    with ServerThread(unbatched_app) as single_url:
        for name, where, a in (("batched", url, app), ("unbatched", single_url, unbatched_app)):
            run_load(where, clients=8, requests=5)  # compile the shapes first
            before = a.state.batcher.stats.to_dict()
            results[name] = run_load(where, clients=8, requests=50, timeout=30)
            after = a.state.batcher.stats.to_dict()
            calls = after["calls"] - before["calls"]
            requests = after["requests"] - before["requests"]
            print(f"\n{name}: {results[name].summary()}; {requests} requests in {calls} calls")
            assert results[name].errors == [] and requests == 400
            if name == "batched":
                assert calls < requests
            else:
                assert calls == requests
    ratio = results["batched"].throughput / results["unbatched"].throughput
    print(
        f"batched / unbatched throughput: {ratio:.2f}x (tiny random model, client threads "
        "in the server's process)"
    )


# ----------------------------------------------------------------- the page


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not present (apt-get install chromium; .ci/run does)"
)
def test_page_in_chromium_shows_what_experiments_classify_prints(server, run_dir, capsys):
    pytest.importorskip("playwright", reason="playwright (pip) is not installed")
    url, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        shown = classify_in_page(page, url, SPAM)
        page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 10_000

    assert classify_cli.main(["--run", str(run_dir), SPAM]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    label, *probs, _ = row.split("\t")
    assert header.split("\t")[1:-1] == [f"p({n})" for n in LABELS]
    assert shown["label"] == label
    assert [b["label"] for b in shown["bars"]] == list(LABELS)
    for bar, printed in zip(shown["bars"], probs):
        assert abs(bar["prob"] - float(printed)) <= 5e-5  # the CLI prints 4 decimals
        assert bar["shown"] == f"{100 * bar['prob']:.2f}%"
    assert not shown["truncated"]
    # the run's facts, exactly as metrics.json (epoch 2) and the classifier have them
    facts = shown["facts"]
    assert facts["labels"] == "ham, spam, promo"
    assert facts["test accuracy"] == "96.25%"
    assert facts["recall ham"] == "98.44%" and facts["recall spam"] == "87.50%"
    assert facts["recall promo"] == "n/a"
    assert facts["reads"] == f"up to {MAX_LENGTH} tokens (pool last-real)"
    assert "epoch 2, 80 test texts" in shown["metrics_note"]


# ----------------------------------------------------------------- the command line


def test_cli_refuses_bad_flags_and_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        serve_cli.main(["--help"])
    assert exit_.value.code == 0 and "POST /classify" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        serve_cli.main(["--run", str(tmp_path), "--max-texts", "0"])
    assert exit_.value.code == 2 and "--max-texts must be positive" in capsys.readouterr().err
    assert serve_cli.main(["--run", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no such folder" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_cli_serves_on_localhost_and_stops(run_dir):
    served = ServeProcess(run_dir, ("--max-texts", "2", "--max-batch", "2"), start_timeout=120)
    with served as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/health", timeout=30) as res:
            assert res.status == 200
        status, got = post(url, {"texts": ["a", "b", "c"]})
        assert status == 413 and "at most 2" in got["error"]
        status, got = post(url, {"texts": ["a", "b"]})
        assert status == 200 and len(got["results"]) == 2
        started = time.monotonic()
    # uvicorn shuts down, then ends the process with the SIGTERM it caught
    assert served.proc.returncode in (0, -signal.SIGTERM), served.log
    assert "Traceback" not in served.log and time.monotonic() - started < 60


def test_the_port_refuses_connections_until_the_server_listens():
    """serve binds its port first (a port in use fails at once) and listens only after
    the warm-up, so clients are refused meanwhile instead of hanging."""
    from gpt2_jax.serve.server import BACKLOG, bind, listen

    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.listen(BACKLOG)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with pytest.raises(OSError):  # a port another server listens on
            bind("127.0.0.1", port).close()
    finally:
        sock.close()
    other = listen("127.0.0.1", 0)
    with other, pytest.raises(OSError):
        bind("127.0.0.1", other.getsockname()[1]).close()


def test_connections_over_the_limit_get_503_and_the_server_goes_on(classifier, run_dir):
    import socket

    batcher = MicroBatcher(lambda texts, rows: classifier.predict(texts, batch_size=rows))
    app = make_app(classifier, run_facts(run_dir, classifier), LIMITS, batcher)
    with ServerThread(app, max_connections=2) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = []  # two clients that send half a request and wait (slowloris)
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(
                b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b'\r\nContent-Length: 100\r\n\r\n{"te'
            )
            slow.append(s)
        time.sleep(0.3)
        status, _ = _get(url + "/health")
        assert status == 503  # refused at once, not queued behind the slow ones
        for s in slow:
            s.close()
        deadline = time.monotonic() + 10
        while _get(url + "/health")[0] != 200:  # their slots come back
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _slow_clients(port, n):
    """``n`` connections that send part of a request and wait: every third only part of
    its headers, the others whole headers and part of the body (slowloris)."""
    clients = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        s.sendall(head if i % 3 == 0 else head + b'\r\nContent-Length: 100\r\n\r\n{"te')
        clients.append(s)
    return clients


def _answer(s) -> bytes:
    """What the server sent on ``s`` before closing it (bounded by the socket's timeout)."""
    got = b""
    while chunk := s.recv(4096):
        got += chunk
    return got


def test_slow_clients_get_408_after_the_read_timeout_and_free_their_slots(classifier, run_dir):
    batcher = MicroBatcher(lambda texts, rows: classifier.predict(texts, batch_size=rows))
    app = make_app(classifier, run_facts(run_dir, classifier), LIMITS, batcher)
    n, timeout = 150, 1.0
    with ServerThread(app, max_connections=n, read_timeout=timeout) as url:
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        slow = _slow_clients(port, n)
        status, body = _get(url + "/health")
        assert status == 503  # full: refused at once, in the API's JSON form
        assert "--max-connections" in json.loads(body)["error"]
        deadline = time.monotonic() + timeout + 20
        while (status := _get(url + "/health")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        waited = time.monotonic() - started
        assert status == 200 and waited < timeout + 20, waited
        status, got = post(url, {"texts": ["answered?"]})
        assert status == 200 and got["results"][0]["label"] == alone(classifier, "answered?")[0]
        for s in slow:
            answer = _answer(s)
            s.close()
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
            error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
            assert "within 1 s (the server's --read-timeout)" in error
    print(f"\n{n} slow clients: a normal request answered after {waited:.2f} s")


def test_read_timeout_leaves_idle_and_working_connections_alone(classifier, run_dir):
    """A connection that sent nothing is closed without a response; a request read whole
    is answered even when classifying it takes longer than the read timeout."""
    slow_batcher = MicroBatcher(
        lambda texts, rows: (time.sleep(1.5), classifier.predict(texts, batch_size=rows))[1]
    )
    app = make_app(classifier, run_facts(run_dir, classifier), LIMITS, slow_batcher)
    with ServerThread(app, read_timeout=0.5) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        status, got = post(url, {"texts": ["slow to classify"]})
        assert status == 200 and len(got["results"]) == 1
        assert _answer(idle) == b""
        idle.close()
