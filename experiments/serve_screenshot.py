"""A screenshot of experiments.serve's page with a message classified, taken in Chromium.

    python -m experiments.serve_screenshot --run runs/spam-124M-... --output docs/serve-page.png

Serves the run on 127.0.0.1 (a free port, from this process), opens the page in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's Python package;
no browser download), types the message, clicks Classify, waits for the answer and
saves a full-page PNG. The test of the page (tests/serve/test_serve.py) drives the browser
through the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: without the networking switches Chromium keeps calling home,
# which on a machine without internet means retries for the whole session.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SPAM = (
    "WINNER!! You have been selected to receive a £900 prize reward! To claim call "
    "09061701461 now. Claim code KL341. Valid 12 hours only."
)


@contextlib.contextmanager
def chromium_page(width: int = 1200, height: int = 760, executable: Path = CHROMIUM):
    """A Playwright page in headless Chromium; closed (browser and driver) on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def classify_in_page(page, url: str, text: str, timeout_ms: int = 60_000) -> dict:
    """Open ``url``, wait for the run's facts, type ``text``, click Classify and read
    what the page shows: ``{"label", "bars": [{"label", "prob", "shown"}], "truncated",
    "facts": {name: shown}}`` (``prob``: the bar's exact value, ``shown``: its text)."""
    page.goto(url, timeout=timeout_ms)
    page.wait_for_selector("#facts dt", timeout=timeout_ms)
    page.fill("#text", text)
    page.click("#classify")
    page.wait_for_selector("#result:not([hidden])", timeout=timeout_ms)
    page.wait_for_selector("#classify:not([disabled])", timeout=timeout_ms)
    if page.is_visible("#error"):
        raise RuntimeError(f"the page shows an error: {page.text_content('#error')}")
    bars = [
        {
            "label": row.get_attribute("data-label"),
            "prob": float(row.get_attribute("data-prob")),
            "shown": row.query_selector(".bar-pct").text_content(),
        }
        for row in page.query_selector_all("#bars .bar-row")
    ]
    facts = {}
    for dl in ("#facts", "#metrics"):
        names = [e.text_content() for e in page.query_selector_all(f"{dl} dt")]
        values = [e.text_content() for e in page.query_selector_all(f"{dl} dd")]
        facts.update(zip(names, values))
    return {
        "label": page.text_content("#label"),
        "bars": bars,
        "truncated": page.is_visible("#truncated"),
        "facts": facts,
        "metrics_note": page.text_content("#metrics-note"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.serve_screenshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, metavar="DIR", help="run folder to serve")
    p.add_argument(
        "--output",
        default="docs/serve-page.png",
        metavar="FILE",
        help="where to save the PNG (default docs/serve-page.png)",
    )
    p.add_argument("--text", default=SPAM, help="the message to classify")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        print(
            f"error: {CHROMIUM} not found; install it (apt-get install chromium)", file=sys.stderr
        )
        return 1
    from gpt2_jax.commands.common import InputError, load
    from gpt2_jax.serve.app import ServerThread, make_app, run_facts
    from gpt2_jax.util.runtime import keep_freed_memory

    keep_freed_memory()
    try:
        classifier = load(args.run)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with (
        ServerThread(make_app(classifier, run_facts(args.run, classifier))) as url,
        chromium_page() as page,
    ):
        shown = classify_in_page(page, url, args.text)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.output, full_page=True)
    print(f"{shown['label']}: " + ", ".join(f"{b['label']} {b['shown']}" for b in shown["bars"]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
