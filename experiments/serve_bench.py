"""Load test of experiments.serve: throughput and latency with and without batching.

    python -m experiments.serve_bench --run runs/spam-124M-... --output bench/serve.md

Starts ``python -m experiments.serve`` twice on 127.0.0.1 (a free port), once as is and
once with --no-batching, and sends each the same load: CLIENTS threads, each POSTing
REQUESTS single-text requests one after another (keep-alive connections), texts taken
in turn from a fixed set of SMS-like messages of mixed lengths. The servers compile
every batch shape before they answer (--warm-up), and a first untimed round warms up
the rest. Prints, and with --output writes as a markdown table, p50/p99 latency,
throughput and the batched/unbatched throughput ratio, with the CPU named.
Any failed request is counted and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gpt2_jax.commands import serve

TEXTS = (
    "Ok lar... Joking wif u oni...",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 "
    "to receive entry question(std txt rate)T&C's apply 08452810075over18's",
    "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight, k? "
    "I've cried enough today.",
    "Had your mobile 11 months or more? U R entitled to Update to the latest colour mobiles "
    "with camera for Free! Call The Mobile Update Co FREE on 08002986030",
    "Is that seriously how you spell his name?",
    "WINNER!! As a valued network customer you have been selected to receivea £900 prize "
    "reward! To claim call 09061701461. Claim code KL341. Valid 12 hours only.",
    "Sorry, I'll call later",
    "As per your request 'Melle Melle (Oru Minnaminunginte Nurungu Vettam)' has been set as "
    "your callertune for all Callers. Press *9 to copy your friends Callertune",
)


@dataclass
class LoadResult:
    """Latencies (seconds) of the requests that succeeded, the failures, the wall time."""

    latencies: list[float]
    errors: list[str]
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.errors)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return len(self.latencies) / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        return (
            f"{self.requests} requests, {len(self.errors)} errors, "
            f"p50 {1000 * self.percentile(50):.1f} ms, p99 {1000 * self.percentile(99):.1f} "
            f"ms, {self.throughput:.1f} requests/s"
        )


def run_load(
    url: str, clients: int = 8, requests: int = 50, texts=TEXTS, timeout: float = 60.0
) -> LoadResult:
    """``clients`` threads, each sending ``requests`` one-text POST /classify in a row
    over one keep-alive connection. Every failure (status, bad answer, exception) is
    recorded, none raised; each request is bounded by ``timeout`` seconds."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            for i in range(requests):
                text = texts[(k * requests + i) % len(texts)]
                body = json.dumps({"texts": [text]}).encode()
                started = time.perf_counter()
                try:
                    conn.request("POST", "/classify", body, {"Content-Type": "application/json"})
                    res = conn.getresponse()
                    answer = res.read()
                    took = time.perf_counter() - started
                    ok = res.status == 200 and len(json.loads(answer)["results"]) == 1
                    problem = None if ok else f"HTTP {res.status}: {answer[:200]!r}"
                except Exception as err:  # noqa: BLE001 - counted, then a fresh connection
                    took, problem = 0.0, f"{type(err).__name__}: {err}"
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                with lock:
                    (errors.append(problem) if problem else latencies.append(took))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * requests)
    return LoadResult(latencies, errors, time.perf_counter() - started)


def cpu_name() -> str:
    """``lscpu``'s model name and the number of CPUs this process may use."""
    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"^Model name:\s*(.+)$", out, re.M)
        name = found.group(1).strip() if found else name
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


class ServeProcess:
    """``python -m experiments.serve --run DIR --port 0 ...`` as a child process;
    ``with ServeProcess(run, flags) as url``: started, ready (``/health``), stopped."""

    def __init__(self, run: str, flags=(), start_timeout: float = 300.0):
        self.cmd = [
            sys.executable,
            "-m",
            "experiments.serve",
            "--run",
            str(run),
            "--port",
            "0",
            *flags,
        ]
        self.start_timeout = start_timeout
        self.proc = None
        self.log = ""  # the server's stderr, once it has stopped

    def __enter__(self) -> str:
        repo = Path(__file__).resolve().parents[1]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )
        self.proc = subprocess.Popen(
            self.cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        box: list[str] = []
        reader = threading.Thread(
            target=lambda: box.append(self.proc.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(self.start_timeout)
        found = re.search(r"http://\S+", box[0]) if box else None
        if not found:
            self.__exit__()  # stops it and keeps its stderr
            raise RuntimeError(f"{' '.join(self.cmd)} did not start: {self.stderr()}")
        return found.group(0)

    def stderr(self) -> str:
        return self.log.strip()[-2000:] or "(no output)"

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # uvicorn stops gracefully on SIGTERM
        try:
            self.log = self.proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.log = self.proc.communicate(timeout=30)[1]


def measure(url: str, clients: int, requests: int) -> LoadResult:
    """A short untimed round (first connections, caches), then the measured one."""
    run_load(url, clients, min(requests, 5))
    return run_load(url, clients, requests)


def table(
    results: dict[str, LoadResult], clients: int, requests: int, run: str, max_batch: int
) -> str:
    batched, single = results["batched"], results["unbatched"]
    lines = [
        f"Load test: {clients} clients x {requests} requests (one text each) on "
        f"127.0.0.1, run `{Path(run).name}`, --max-batch {max_batch}, --batch-wait-ms "
        f"{serve.parser().get_default('batch_wait_ms'):g} (the default); "
        f"CPU: {cpu_name()}.",
        "",
        "| server | requests | errors | p50 latency | p99 latency | throughput |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.requests} | {len(r.errors)} | "
            f"{1000 * r.percentile(50):.1f} ms | {1000 * r.percentile(99):.1f} ms | "
            f"{r.throughput:.1f} req/s |"
        )
    lines += ["", f"Batched / unbatched throughput: {batched.throughput / single.throughput:.2f}x"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.serve_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, metavar="DIR", help="run folder to serve")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=50, help="requests per client (default 50)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="the servers' --max-batch (default 8: no more than the clients send "
        "at once, and fewer shapes to compile)",
    )
    p.add_argument("--output", metavar="FILE", help="also write the table (markdown) here")
    args = p.parse_args(argv)
    if min(args.clients, args.requests, args.max_batch) <= 0:
        p.error("--clients, --requests and --max-batch must be positive")
    results = {}
    common = ("--warm-up", "--max-batch", str(args.max_batch))
    for name, flags in (("batched", common), ("unbatched", (*common, "--no-batching"))):
        with ServeProcess(args.run, flags) as url:
            results[name] = measure(url, args.clients, args.requests)
        print(f"{name}: {results[name].summary()}", file=sys.stderr)
    text = table(results, args.clients, args.requests, args.run, args.max_batch)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
