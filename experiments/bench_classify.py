"""Benchmark bulk classification: packed rows vs length buckets vs transformers, one run.

    python -m experiments.bench_classify --texts 1000 --size 124M --docs docs/speed.md

The same N texts (the first N messages of the SMS file under $GPT2_JAX_SHARED_DATA, else
synthetic texts of SMS-like lengths) are classified in one process by a classifier of
random weights (``--pool last-real``, max_length the longest text) four ways, batch
size alike, float32:

* ``Classifier.predict`` (texts packed several to a row, ``classifier.packed``);
* the unpacked path it replaced (length-sorted rows cut to 32-token buckets);
* transformers' ``pipeline`` on the folder ``experiments.export`` writes;
* onnxruntime on the graph ``experiments.export --to onnx`` writes (``OnnxClassifier``).

Two more rows: the packed path with bfloat16 matmul inputs (``Classifier.with_dtype``;
``--no-bfloat16`` skips it), and with ``--devices N`` (N > 1: N CPU devices, XLA_FLAGS
set before JAX starts) the packed path on a ``data=N`` mesh (``Classifier.on_mesh``).
Each path is timed cold (first call, compiles included), then warm ``--repeats`` times,
the paths taken in turn (packed, buckets, pipeline, onnx, packed, ...) so that a drift of
the machine's speed touches all alike; the least warm time is given. Then the start-up of
``python -m experiments.classify --run DIR "one text"`` in fresh processes: with an empty
compilation cache, and with the cache that call wrote (the least of ``--startup-runs``
each; ``--startup-runs 0`` skips it). Token slots: what blocks
``0 .. n-2`` compute against the real tokens. The real tokens' rate is given in GFLOP/s
of the blocks' matmuls (24 E^2 per token and block) against the rate this process
measures for those matmuls (``experiments.bench.matmul_rate``). Writes
<out>/results.{json,md}; ``--docs FILE`` puts the table between the markers
``<!-- bench_classify -->`` and ``<!-- /bench_classify -->`` of FILE.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.bench import matmul_rate
from gpt2_jax.util.machine import machine_name

SIZES = {  # name: (emb_dim, n_layers, n_heads)
    "124M": (768, 12, 12),
    "small": (256, 4, 4),
}
MARK = ("<!-- bench_classify -->", "<!-- /bench_classify -->")


def _texts(n: int) -> tuple[list[str], str]:
    shared = os.environ.get("GPT2_JAX_SHARED_DATA")
    sms = Path(shared or "-") / "sms_spam_collection" / "SMSSpamCollection"
    if shared and sms.is_file():
        from gpt2_jax.data.sms import read_sms_spam

        return list(read_sms_spam(sms)["text"][:n]), f"the first {n} messages of the SMS file"
    rng = np.random.default_rng(0)
    words = "free call now text me later ok see you at home win a prize reply stop".split()
    lengths = np.clip(rng.lognormal(2.7, 0.7, n).astype(int), 1, 180)
    return [" ".join(rng.choice(words, k)) for k in lengths], f"{n} synthetic SMS-like texts"


def _classifier(root: Path, size: str, max_length: int, bpe_dir):
    """A random ``last-real`` classifier saved in ``root/run`` and exported to ``root/hf``."""
    from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier
    from gpt2_jax.classifier.export import export_classifier
    from gpt2_jax.model.config import GPTConfig
    from gpt2_jax.model.gpt import init_params

    e, layers, heads = SIZES[size]
    cfg = GPTConfig(
        vocab_size=50257,
        context_length=1024,
        emb_dim=e,
        n_heads=heads,
        n_layers=layers,
        qkv_bias=True,
        num_classes=2,
    )
    spec = ClassifierConfig(
        model=cfg, labels=("ham", "spam"), pool="last-real", max_length=max_length
    )
    save_classifier(root / "run", init_params(cfg, seed=0), spec, bpe_dir=bpe_dir)
    export_classifier(root / "run", root / "hf")
    return root / "run", root / "hf"


def _startup(run_dir: Path, tmp: Path, runs: int) -> dict:
    """Seconds of ``experiments.classify`` of one text in a fresh process, cold (an empty
    compilation cache) and warm (the cache a cold call wrote): the least of ``runs``."""
    import subprocess

    command = [sys.executable, "-m", "experiments.classify", "--run", str(run_dir), "a text"]

    def once(cache: Path) -> float:
        env = dict(os.environ, GPT2_JAX_COMPILE_CACHE=str(cache))
        repo = Path(__file__).resolve().parents[1]
        seconds, out = _timed(
            lambda: subprocess.run(command, env=env, capture_output=True, cwd=repo)
        )
        if out.returncode != 0:
            raise SystemExit(f"classify failed: {out.stderr.decode()[-500:]}")
        return seconds

    cold, warm = [], []
    for i in range(runs):
        cold.append(once(tmp / f"cache{i}"))
        warm.append(once(tmp / f"cache{i}"))
    return {"cold_s": min(cold), "warm_s": min(warm), "runs": runs}


def _timed(f) -> tuple[float, object]:
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def _pipeline(hf_dir: Path, texts: list[str], batch: int):
    """A call of transformers' ``pipeline`` on all texts -> probabilities [N, 2]."""
    import torch
    import transformers

    pipe = transformers.pipeline("text-classification", model=str(hf_dir), top_k=None, device="cpu")

    def run():
        with torch.inference_mode():
            results = pipe(texts, truncation=True, batch_size=batch)
        return np.array(
            [[{r["label"]: r["score"] for r in res}[k] for k in ("ham", "spam")] for res in results]
        )

    return run


def _onnx(run_dir: Path, out: Path, texts: list[str], batch: int):
    """The ONNX export run by onnxruntime, batches in the texts' order as the pipeline's."""
    from gpt2_jax.classifier.onnx_export import OnnxClassifier, export_onnx

    model = OnnxClassifier.load(export_onnx(run_dir, out))
    return lambda: model.predict_proba(texts, batch)


def _ours(model, data, args) -> dict:
    """The gpt2_jax paths: name -> a call giving probabilities [N, C]."""
    from gpt2_jax.classifier import classifier as clf

    def probs(which, packed=True):
        s = which.spec
        return functools.partial(
            clf._probs,
            which.computed,
            which.params,
            data.ids,
            data.lengths,
            s.pool,
            args.batch_size,
            packed=packed,
            placement=which.placement,
        )

    calls = {"packed": probs(model), "buckets": probs(model, packed=False)}
    if not args.no_bfloat16:
        calls["bfloat16"] = probs(model.with_dtype("bfloat16"))
    if args.devices > 1:
        from gpt2_jax.parallel.mesh import make_mesh

        calls["mesh"] = probs(model.on_mesh(make_mesh(f"data={args.devices}")))
    return calls


def _time_in_turn(calls: dict, repeats: int) -> dict:
    """Each call once cold, then ``repeats`` warm rounds taking the calls in turn:
    name -> cold_s, warm_s (the least), warm_all_s, probs."""
    rows = {}
    for name, call in calls.items():
        cold, probs = _timed(call)
        rows[name] = {"cold_s": cold, "warm_all_s": [], "probs": np.asarray(probs)}
    for _ in range(repeats):
        for name, call in calls.items():
            rows[name]["warm_all_s"].append(_timed(call)[0])
    for r in rows.values():
        r["warm_s"] = min(r["warm_all_s"])
    return rows


def measure(args) -> dict:
    from gpt2_jax.classifier import classifier as clf
    from gpt2_jax.classifier.packed import bucketed_slots, packed_slots
    from gpt2_jax.data.tokenizer import get_tokenizer
    from gpt2_jax.training.prefix import unique_texts

    texts, source = _texts(args.texts)
    bpe = Path(os.environ.get("GPT2_JAX_SHARED_DATA", "-")) / "gpt2_bpe"
    bpe_dir = bpe if (bpe / "encoder.json").is_file() else None
    tokens = [len(t) for t in get_tokenizer(bpe_dir).encode_ordinary_batch(texts)]
    full = min(1024, max(tokens))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, hf_dir = _classifier(Path(tmp), args.size, full, bpe_dir)
        model = clf.Classifier.load(run_dir)
        data, _ = clf._encode_texts(model.tokenizer, texts, full, model.spec.model.vocab_size)
        calls = _ours(model, data, args)
        if not args.no_pipeline:
            calls["pipeline"] = _pipeline(hf_dir, texts, args.batch_size)
        if not args.no_onnx:
            calls["onnx"] = _onnx(run_dir, Path(tmp) / "onnx", texts, args.batch_size)
        rows = _time_in_turn(calls, args.repeats)
        startup = _startup(run_dir, Path(tmp), args.startup_runs) if args.startup_runs else None
    first, _ = unique_texts(data.ids, data.lengths)
    lengths = data.lengths
    chunks = [lengths[i : i + args.batch_size] for i in range(0, len(lengths), args.batch_size)]
    slots = {
        "packed": packed_slots(lengths[first], full, args.batch_size),
        "bfloat16": packed_slots(lengths[first], full, args.batch_size),
        "mesh": packed_slots(lengths[first], full, args.batch_size, args.devices),
        "buckets": bucketed_slots(lengths, full, args.batch_size),
        "pipeline": int(sum(len(c) * c.max() for c in chunks)),
        "onnx": int(sum(len(c) * c.max() for c in chunks)),
    }
    e, layers, _ = SIZES[args.size]
    rate = matmul_rate(None, 4096, e)
    rate_bf16 = None if args.no_bfloat16 else matmul_rate("bfloat16", 4096, e)
    real = int(lengths.sum())
    for name, r in rows.items():
        r["slots"] = slots[name]
        r["texts_per_s"] = len(texts) / r["warm_s"]
        r["real_gflops"] = real * layers * 24 * e * e / r["warm_s"] / 1e9
        r["max_diff_vs_packed"] = (
            float(np.abs(r.pop("probs") - rows["packed"]["probs"]).max())
            if name != "packed"
            else 0.0
        )
    rows["packed"].pop("probs")
    return {
        "machine": machine_name(),
        "source": source,
        "size": args.size,
        "texts": len(texts),
        "real_tokens": real,
        "max_length": full,
        "batch_size": args.batch_size,
        "matmul_gflops": rate,
        "matmul_gflops_bfloat16": rate_bf16,
        "repeats": args.repeats,
        "devices": args.devices,
        "rows": rows,
        "startup": startup,
    }


def table(res: dict) -> str:
    words = {
        "packed": "gpt2_jax `Classifier.predict` (packed rows)",
        "buckets": "gpt2_jax before: 32-token length buckets",
        "pipeline": "transformers `pipeline` on the exported folder",
        "onnx": "onnxruntime on `experiments.export --to onnx` (`OnnxClassifier`)",
        "bfloat16": "gpt2_jax packed, bfloat16 matmuls",
        "mesh": f"gpt2_jax packed, rows over a data={res.get('devices')} mesh",
    }
    pipe = res["rows"].get("pipeline", {}).get("warm_s")
    bf16 = res.get("matmul_gflops_bfloat16")
    lines = [
        f"Machine: {res['machine']}. {res['source']}, {res['real_tokens']:,} real tokens, "
        f"max_length {res['max_length']}, a random {res['size']} classifier "
        f"(`--pool last-real`), batch size {res['batch_size']}, float32 but where a row "
        f"says bfloat16, one process"
        + (
            f" with {res['devices']} CPU devices (XLA_FLAGS), which every row shares"
            if res.get("devices", 1) > 1
            else ""
        )
        + f". Matmul rate measured here: {res['matmul_gflops']:.0f} GFLOP/s"
        + (f" (bfloat16 inputs: {bf16:.0f})" if bf16 else "")
        + f". Warm s: the least of {res.get('repeats', 1)} warm calls, the paths taken in "
        "turn (packed, buckets, ..., packed, ...), so that a drift of the machine's speed "
        "touches them alike.",
        "",
        "| path | token slots (× real) | cold s | warm s | texts/s | × vs pipeline "
        "| real-token GFLOP/s (share of matmul rate) | max prob. diff vs packed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        ratio = f"{pipe / r['warm_s']:.2f}" if pipe else "n/a"
        share = 100 * r["real_gflops"] / res["matmul_gflops"]
        lines.append(
            f"| {words[name]} | {r['slots']:,} ({r['slots'] / res['real_tokens']:.2f}) | "
            f"{r['cold_s']:.1f} | {r['warm_s']:.1f} | {r['texts_per_s']:.0f} | {ratio} | "
            f"{r['real_gflops']:.0f} ({share:.0f} %) | {r['max_diff_vs_packed']:.1e} |"
        )
    if res.get("startup"):
        up = res["startup"]
        lines += [
            "",
            f'Start-up, `python -m experiments.classify --run DIR "one text"` with this '
            f"classifier, a fresh process (the least of {up['runs']}): {up['cold_s']:.1f} s "
            f"with an empty compilation cache, {up['warm_s']:.1f} s with the cache warm.",
        ]
    return "\n".join(lines)


def _into_docs(path: Path, md: str) -> None:
    text = path.read_text()
    if MARK[0] not in text or MARK[1] not in text:
        raise SystemExit(f"{path}: no {MARK[0]} ... {MARK[1]} markers to write the table between")
    pattern = re.escape(MARK[0]) + ".*?" + re.escape(MARK[1])
    path.write_text(re.sub(pattern, lambda _: f"{MARK[0]}\n{md}\n{MARK[1]}", text, flags=re.S))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_classify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--size", choices=list(SIZES), default="124M")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-pipeline", action="store_true", help="skip transformers")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument(
        "--startup-runs",
        type=int,
        default=3,
        metavar="N",
        help="times classify of one text is started cold and warm (the least is given; 0: none)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="R",
        help="warm calls of each path, the paths taken in turn (the least is given)",
    )
    p.add_argument("--no-bfloat16", action="store_true", help="skip the bfloat16 row")
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="N > 1: this process gets N CPU devices (XLA_FLAGS, set before JAX starts) and "
        "a row of the packed path on a data=N mesh",
    )
    p.add_argument("--out", default="bench_classify")
    p.add_argument("--docs", type=Path, help="markdown file to write the table into")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.devices < 1:
        p.error("--repeats and --devices must be at least 1")
    if args.devices > 1:
        if "jax" in sys.modules:
            p.error("--devices: JAX is already imported here; run the benchmark as a command")
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    res = measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(res)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(md + "\n")
    if args.docs:
        _into_docs(args.docs, md)
    print(md)


if __name__ == "__main__":
    main()
