"""Per-device memory of the training step, for each GPT-2 size and trainable preset on
a device mesh, from XLA's analysis of the compiled step (nothing is allocated).

    python -m experiments.memory_plan --mesh fsdp=8 --fake-devices 8
    python -m experiments.memory_plan --sizes 1558M --trainable all --mesh data=2,fsdp=4 \\
        --fake-devices 8 --batch-size 16 --length 1024 --device-memory-gib 80

--fake-devices N plans for N devices on this machine's CPU (XLA's host-platform device
count), so a plan for eight GPUs needs no GPU. The figures are per device: the step's
arguments (trainable state, frozen weights, batch), plus its outputs less those that
reuse donated arguments, plus its temporaries (activations for the backward pass,
gradients, gathered weights). They cover the step only: the frozen-prefix pass runs
before it, one batch at a time. Compiling a 1558M step takes a minute or two.
"""

from __future__ import annotations

import argparse
import os
import sys

SIZES = ("124M", "355M", "774M", "1558M")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.memory_plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated GPT-2 sizes")
    p.add_argument(
        "--trainable",
        default="last_block,all",
        metavar="PRESETS",
        help="comma-separated presets (see experiments.finetune --help)",
    )
    p.add_argument(
        "--mesh",
        default="",
        metavar="data=N,fsdp=M",
        help="the mesh (default: every device on data)",
    )
    p.add_argument(
        "--fake-devices",
        type=int,
        default=0,
        metavar="N",
        help="plan for N devices by splitting this machine's CPU into N",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--length",
        type=int,
        default=1024,
        help="tokens per text (the context length is the worst case)",
    )
    p.add_argument("--pool", default="last", help="pooling (last, last-real, first, mean)")
    p.add_argument(
        "--no-prefix-cache", action="store_true", help="the step runs every block (the book's way)"
    )
    p.add_argument(
        "--device-memory-gib",
        type=float,
        default=80.0,
        help="memory of one device, for the 'fits' column (default 80)",
    )
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.fake_devices:
        if "jax" in sys.modules:
            print(
                "error: --fake-devices must be set before JAX starts; run this as its own process",
                file=sys.stderr,
            )
            return 1
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
            f"platform_device_count={args.fake_devices}"
        ).strip()
        os.environ["JAX_PLATFORMS"] = "cpu"
    from gpt2_jax.model.config import settings_for_size
    from gpt2_jax.parallel.mesh import Placement, describe, make_mesh
    from gpt2_jax.training.memory import GIB
    from gpt2_jax.training.step_memory import step_memory

    try:
        placement = Placement(make_mesh(args.mesh))
        sizes = [s for s in args.sizes.split(",") if s]
        for size in sizes:
            settings_for_size(size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"mesh: {describe(placement.mesh)}; batch {args.batch_size} x {args.length} tokens, "
        f"pool {args.pool}, prefix cache {'off' if args.no_prefix_cache else 'on'}"
    )
    print(
        "| size | trainable | arguments GiB | temporaries GiB | peak per device GiB | "
        f"fits in {args.device_memory_gib:g} GiB |"
    )
    print("|---|---|---:|---:|---:|---|")
    for size in sizes:
        for preset in [t for t in args.trainable.split(",") if t]:
            try:
                m = step_memory(
                    settings_for_size(size),
                    preset,
                    placement,
                    batch_size=args.batch_size,
                    length=args.length,
                    pool=args.pool,
                    prefix_cache=not args.no_prefix_cache,
                )
            except ValueError as err:
                print(f"error: {size} {preset}: {err}", file=sys.stderr)
                return 1
            fits = "yes" if m.peak <= args.device_memory_gib * GIB else "no"
            print(
                f"| {size} | {preset} | {m.arguments / GIB:.2f} | {m.temporaries / GIB:.2f} | "
                f"{m.peak / GIB:.2f} | {fits} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
