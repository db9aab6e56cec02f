"""python -m benchmarks.runtime: see the package docstring."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

import benchmarks.runtime as package
from benchmarks.runtime.inputs import DEFAULT_BUNDLE, random_bundle
from benchmarks.runtime.measure import explanations, measure, ms
from benchmarks.runtime.uploads import worst_case_uploads
from worker.runtime.predictor import Predictor
from worker.runtime.threads import configure_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtime", description=package.__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=None, help=f"model bundle folder (default {DEFAULT_BUNDLE})")
    parser.add_argument("--tiny", action="store_true", help="benchmark a random-init ResNet-20 at width 0.25 instead")
    parser.add_argument("--random", metavar="ARCH", help="benchmark a random-init model of this ml.models architecture")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="batch sizes for throughput")
    parser.add_argument(
        "--chunk",
        type=int,
        default=0,
        help="most images per forward pass (bigger batches are split, as in the worker); default: the runtime's "
        "for the device (worker.runtime.predictor.DEFAULT_MAX_BATCH)",
    )
    parser.add_argument("--batch-repeats", type=int, default=5, help="timed repeats per batch size")
    parser.add_argument(
        "--target", type=float, default=500.0, help="images/s the arithmetic section sizes against (default 500)"
    )
    parser.add_argument("--no-worst-case", action="store_true", help="skip the 40-megapixel upload measurements")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="only compare one image with explanations (Grad-CAM, members, OOD) against without",
    )
    parser.add_argument("--tta", type=int, default=0, choices=(0, 1, 2), help="TTA level of a --random/--tiny bundle")
    parser.add_argument("--members", type=int, default=1, help="members of a --random/--tiny bundle")
    parser.add_argument(
        "--precisions",
        default="fp32,auto",
        help="comma-separated runtime precisions (auto | bf16 | fp32 | int8, worker.runtime.precision) measured one after "
        "the other in this run; the first is the baseline of the comparison (default fp32,auto)",
    )
    parser.add_argument(
        "--tta-levels",
        default="",
        help="comma-separated TTA levels to run the bundle at (worker.runtime WORKER_TTA; default: its own level)",
    )
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    if args.tiny:
        bundle_dir = random_bundle(Path(tmp.name), "resnet20", width=0.25, tta=args.tta, members=args.members)
    elif args.random:
        bundle_dir = random_bundle(Path(tmp.name), args.random, tta=args.tta, members=args.members)
    else:
        bundle_dir = args.bundle or DEFAULT_BUNDLE
        if not bundle_dir.is_dir():
            parser.error(f"no model bundle at {bundle_dir}; pass --bundle <dir> or --tiny")

    threads = configure_threads()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    levels = [int(v) for v in args.tta_levels.split(",") if v.strip()] or [None]
    predictors = {
        f"{p}" + ("" if level is None else f" tta {level}"): Predictor(
            bundle_dir, device="cpu", max_batch=args.chunk or None, precision=p, tta=level
        )
        for level in levels
        for p in precisions
    }
    first = next(iter(predictors.values()))
    height, width = first.input_size

    print("== hardware")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {affinity} usable")
    print(f"load average (1, 5, 15 min) at start: {load}  (other work on the machine slows every number below)")
    print(f"python {platform.python_version()}, torch {torch.__version__}, intra-op threads {threads}")
    print(f"bundle: {bundle_dir} (version {first.version}, {len(first.classes)} classes, input {height}x{width})")

    if args.explain:
        for p, predictor in predictors.items():
            print(f"\n== precision {p} -> {predictor.load().precision}")
            explanations(predictor, args.runs, args.warmup)
        tmp.cleanup()
        return 0

    summary = {p: measure(predictor, args) for p, predictor in predictors.items()}
    if len(summary) > 1:
        ref = next(iter(summary))
        print(f"\n== precisions against {ref} ({summary[ref]['precision']}), same run")
        for p, row in summary.items():
            print(
                f"{p:>11} ({row['precision']}, TTA {row['tta']}): one CIFAR image median {ms(row['one'])}"
                f" = {summary[ref]['one'] / row['one']:4.2f}x faster; batch {row['batch']}:"
                f" {row['rate']:8.1f} images/s = {row['rate'] / summary[ref]['rate']:4.2f}x"
            )
    if not args.no_worst_case:
        worst_case_uploads()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
