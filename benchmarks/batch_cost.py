"""python -m benchmarks.batch_cost: the model's CPU cost per image, by batch size and torch threads.

What bounds the real-time benchmark's 32-client target (benchmarks/results/realtime-batch.md): the
naive server pays one single-image forward pass per request, the product one batched pass per
worker batch; the ratio of those two costs is the most any deployment of the product can gain
over the naive server, whatever its web, database and broker cost. Each row runs the worker's
runtime (`worker.runtime.predictor.Predictor.predict_probs`: the bundle's module, at the
worker's precision and TTA level) on random 32x32 images and reads the process's CPU time
(``time.process_time``: all threads) and the wall clock.

    python -m benchmarks.batch_cost --threads 1 2 --batches 1 16 64
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from benchmarks.services import ROOT


def measure(predictor, batch: int, images: int, warm_up: int = 5) -> tuple[float, float]:
    """(CPU ms per image, wall ms per image) over at least ``images`` images in batches of ``batch``."""
    import torch

    x = torch.randint(0, 256, (batch, 3, *predictor.input_size), dtype=torch.uint8)
    for _ in range(warm_up):
        predictor.predict_probs(x)
    repeats = max(3, -(-images // batch))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        predictor.predict_probs(x)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = repeats * batch
    return cpu * 1000 / n, wall * 1000 / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "default"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64], help="images per forward pass")
    parser.add_argument("--images", type=int, default=256, help="images per row (at least 3 passes)")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.threads) or any(b < 1 for b in args.batches) or args.images < 1:
        parser.error("--threads, --batches and --images must be positive")

    import torch

    from worker.runtime.predictor import Predictor

    predictor = Predictor(args.bundle, device="cpu")
    bundle = predictor.load(warm_up=True)
    print(f"cpu: {platform.machine()}, {os.cpu_count()} logical CPUs; load average at start {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}; bundle {predictor.version}: {bundle.precision}, TTA level {bundle.tta}")
    print(f"{'threads':>7} {'batch':>5} {'CPU ms/image':>13} {'wall ms/image':>14} {'images/s':>9}  saves vs batch 1")
    for threads in args.threads:
        torch.set_num_threads(threads)
        single = None
        for batch in args.batches:
            cpu, wall = measure(predictor, batch, args.images)
            single = cpu if batch == 1 else single
            saving = f"{1 - cpu / single:6.0%}" if single and batch != 1 else ""
            print(f"{threads:>7} {batch:>5} {cpu:>13.2f} {wall:>14.2f} {1000 / wall:>9.1f}  {saving}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
