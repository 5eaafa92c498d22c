"""Write a trained classifier, or a GPT-2 folder, in Hugging Face's format.

    python -m experiments.export --run runs/spam-124M-... --to hf exported/spam
    python -m experiments.export --run runs/spam-124M-... --to onnx exported/spam-onnx
    python -m experiments.export --model-dir models/124M --to hf models/124M-hf

--run: the classifier becomes a transformers GPT2ForSequenceClassification folder
(config.json with id2label/label2id and pad_token_id, model.safetensors, vocab.json,
merges.txt, tokenizer_config.json). Then, with transformers installed:

    from transformers import pipeline
    clf = pipeline("text-classification", model="exported/spam", top_k=None)
    clf("WINNER!! Claim your prize now", truncation=True)

gives the probabilities experiments.classify gives (within float32 rounding). Only
classifiers trained with --pool last-real can be exported (transformers reads the
last real token); the head's bias is folded into ln_f's bias, since transformers'
score layer has none (see gpt2_jax.classifier.export).

--to onnx OUT (with --run): the same model as one ONNX graph, model.onnx, whose output
is the probabilities (the run's temperature applied), beside the tokenizer files and
gpt2_jax_onnx.json (labels, max length, truncated side, threshold). The export is run
once with onnxruntime on probe texts and refused if it differs from the classifier by
more than 1e-4. Needs torch, transformers and onnxruntime (pip install 'gpt2_jax[onnx]').

--model-dir: any GPT-2 folder this package reads (OpenAI's TensorFlow checkpoint
included) becomes a Hugging Face GPT2LMHeadModel folder with model.safetensors, bit
for bit the same weights. Convert once, then pass --model-dir OUT to
experiments.finetune / experiments.spam: TensorFlow is no longer needed.

--run also writes a model card (README.md: labels, data, figures, config) into OUT;
--push-to-hub OWNER/NAME then uploads OUT to that Hub repository (--private to create
it private; HF_TOKEN, HF_ENDPOINT).
"""

from __future__ import annotations

import argparse
import sys

from gpt2_jax.util.compile_cache import FLAG_HELP, use_compile_cache

TARGETS = ("hf", "onnx")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--run", metavar="DIR", help="run folder of a trained classifier (holds classifier.json)"
    )
    what.add_argument(
        "--model-dir",
        metavar="DIR",
        help="a GPT-2 folder (OpenAI's or Hugging Face's layout) to convert",
    )
    p.add_argument(
        "--to",
        nargs=2,
        metavar=("FORMAT", "OUT"),
        required=True,
        help="format (hf: Hugging Face transformers; onnx: an ONNX graph, --run only) and "
        "the folder to write (must not exist, or be empty)",
    )
    p.add_argument(
        "--push-to-hub",
        metavar="OWNER/NAME",
        help="with --run: then upload the folder, with its model card (README.md), to this "
        "Hub model repository (HF_ENDPOINT, HF_TOKEN; see docs/huggingface.md)",
    )
    p.add_argument(
        "--private", action="store_true", help="with --push-to-hub: create the repository private"
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error, and TensorFlow's start-up lines",
    )
    p.add_argument("--no-compile-cache", action="store_true", help=FLAG_HELP)
    return p


def check_args(p: argparse.ArgumentParser, args) -> None:
    """Flag combinations that cannot work: argparse errors (exit 2) before any work."""
    target = args.to[0]
    if target not in TARGETS:
        p.error(f"--to {target}: unknown format; choose from {', '.join(TARGETS)}")
    if target == "onnx" and not args.run:
        p.error("--to onnx exports a trained classifier: give --run DIR")
    if (args.push_to_hub or args.private) and not args.run:
        p.error("--push-to-hub and --private go with --run (a trained classifier)")
    if args.push_to_hub and target != "hf":
        p.error("--push-to-hub uploads the transformers folder: use it with --to hf")
    if args.private and not args.push_to_hub:
        p.error("--private goes with --push-to-hub")
    if args.push_to_hub:
        from gpt2_jax.commands.hub_push import check_repo_id

        try:
            check_repo_id(args.push_to_hub)
        except ValueError as err:
            p.error(str(err))


def to_onnx(args, out: str) -> None:
    from gpt2_jax.classifier.onnx_export import export_onnx

    path = export_onnx(args.run, out)
    print(
        f"wrote {path}: run it with onnxruntime, or in Python with "
        f"gpt2_jax.classifier.onnx_export.OnnxClassifier.load('{path}').predict(texts)"
    )


def to_transformers(args, out: str) -> None:
    """The classifier as a transformers folder with its model card; then, if asked, pushed."""
    from gpt2_jax.classifier.export import export_classifier
    from gpt2_jax.commands.model_card import write_model_card

    path = export_classifier(args.run, out)
    write_model_card(args.run, path, args.push_to_hub)
    print(
        f"wrote {path}: load it with transformers.pipeline('text-classification', "
        f"model='{path}', top_k=None)"
    )
    if args.push_to_hub:
        from gpt2_jax.commands.hub_push import push_folder

        url = push_folder(path, args.push_to_hub, private=args.private)
        print(f"pushed {path} to {args.push_to_hub}: {url}")


def backbone_to_hf(args, out: str) -> None:
    from gpt2_jax.classifier.export import export_backbone

    path = export_backbone(args.model_dir, out)
    print(f"wrote {path}: a Hugging Face GPT-2 folder; use it with --model-dir {path}")


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    from gpt2_jax.util.runtime import keep_freed_memory, quiet_native_logs

    keep_freed_memory()
    quiet_native_logs(args.debug)
    use_compile_cache(not args.no_compile_cache)
    target, out = args.to
    export = to_onnx if target == "onnx" else to_transformers if args.run else backbone_to_hf
    try:
        export(args, out)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
