"""A million short texts classified from a file: time and peak memory of the streaming
``classify --input`` (issue 25's target: < 2 GiB peak, with a progress bar).

    python -m experiments.classify_stream_bench [--rows 1000000] [--folder /tmp/stream_bench]

Writes a tiny random classifier (2 layers, 32 wide, GPT-2's vocabulary; the BPE files
from ``--bpe-dir``) and a JSONL file of ``--rows`` short texts into the folder, runs
``experiments.classify --input ... --output ...`` in a subprocess and prints its wall
time, texts/s and peak resident memory, next to the file's size and what its texts
alone take in memory as Python strings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = "the invoice app crashes love billed twice settings card march thanks why ok".split()


def write_inputs(folder: Path, rows: int, bpe_dir: str) -> tuple[Path, Path, float]:
    """The classifier's run folder, the JSONL file and its texts' size in memory (MiB)."""
    from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier
    from gpt2_jax.model.config import GPTConfig
    from gpt2_jax.model.gpt import init_params

    cfg = GPTConfig(
        vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=2, num_classes=2
    )
    spec = ClassifierConfig(model=cfg, labels=("ham", "spam"), pool="last-real", max_length=40)
    run = save_classifier(folder / "run", init_params(cfg, seed=0), spec, bpe_dir=bpe_dir).parent
    rng, in_memory = random.Random(0), 0
    source = folder / "texts.jsonl"
    with open(source, "w", encoding="utf-8") as f:
        for _ in range(rows):
            text = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
            in_memory += sys.getsizeof(text)
            f.write(json.dumps({"text": text}) + "\n")
    return run, source, in_memory / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--folder", default="/tmp/stream_bench")
    p.add_argument("--bpe-dir", default=os.environ.get("GPT2_BPE_DIR", "data/gpt2_bpe"))
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    run, source, in_memory = write_inputs(folder, args.rows, args.bpe_dir)
    out = folder / "predictions.csv"
    command = [sys.executable, "-m", "experiments.classify", "--run", str(run)]
    command += ["--input", str(source), "--output", str(out), "--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    print(
        f"{args.rows} texts ({source.stat().st_size / 2**20:.0f} MiB file, "
        f"{in_memory:.0f} MiB of texts as Python strings): {seconds:.0f} s, "
        f"{args.rows / seconds:.0f} texts/s, peak resident memory {peak:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
