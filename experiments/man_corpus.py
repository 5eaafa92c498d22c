"""A corpus of long documents with several topics, from the machine's own manual pages.

    python -m experiments.man_corpus man_pages.jsonl --per-section 150

Each line is ``{"text": ..., "label": ...}``: one manual page rendered as plain text
(``man -l``, 80 columns, without its header and footer lines, which name the section),
labelled by its section: system calls (2), library functions
(3), file formats (5), overviews (7), administration commands (8). Most pages are
longer than GPT-2's context, so the corpus exercises ``--long-texts chunk``. Pages are
picked with a fixed seed from the sorted file names, so the same machine gives the same
file; another machine's pages differ. Needs ``man`` (Debian: ``apt-get install man-db``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

SECTIONS = {
    "2": "system-calls",
    "3": "library-functions",
    "5": "file-formats",
    "7": "overviews",
    "8": "administration",
}
MAX_CHARS = 8_000  # default cut of a page (about 2,000 tokens; a few pages are whole manuals)


def render(page: Path, max_chars: int = MAX_CHARS) -> str:
    """The page as plain text: overstrike (bold, underline) removed, blank runs collapsed."""
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        ["man", "-P", "cat", "-l", str(page)], capture_output=True, env=env, timeout=60
    )
    lines = re.sub(r".\x08", "", done.stdout.decode("utf-8", "replace")).strip().splitlines()
    # the first and last lines name the section ("System Calls Manual", "name(2)"): the
    # label itself, so they are left out and the topic must come from the page's content
    text = "\n".join(lines[1:-1])
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()[:max_chars]


def pages(section: str, per_section: int, seed: int) -> list[Path]:
    folder = Path(f"/usr/share/man/man{section}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    return random.Random(seed).sample(files, min(per_section, len(files)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.man_corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", help="JSONL file to write")
    p.add_argument("--per-section", type=int, default=150, metavar="N")
    p.add_argument("--min-chars", type=int, default=400, metavar="N", help="skip shorter pages")
    p.add_argument(
        "--max-chars",
        type=int,
        default=MAX_CHARS,
        metavar="N",
        help="cut each page at N characters",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    counts = {}
    with open(args.out, "w", encoding="utf-8") as f:
        for section, label in SECTIONS.items():
            if not Path(f"/usr/share/man/man{section}").is_dir():
                print(f"error: /usr/share/man/man{section} is missing", file=sys.stderr)
                return 1
            counts[label] = 0
            for page in pages(section, args.per_section, args.seed):
                text = render(page, args.max_chars)
                if len(text) >= args.min_chars and "<|endoftext|>" not in text:
                    f.write(json.dumps({"text": text, "label": label}) + "\n")
                    counts[label] += 1
    print(f"wrote {args.out}: {sum(counts.values())} pages, {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
