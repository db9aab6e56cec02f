"""GPU inference throughput of worker/runtime: images/s at batch sizes 1 to 4096, fp32 and bf16.

    python -m benchmarks.gpu_runtime [--bundle bundles/default] [--sizes 1 4 16 64 256 1024 4096]
                                     [--seconds 1.0] [--out benchmarks/results/gpu_runtime.md]

Needs CUDA. On a machine without it, it says so and measures nothing (exit status 0): the numbers
of this benchmark exist only where a GPU ran it, and none are claimed otherwise.

What it measures, per dtype and batch size: `Predictor.predict_probs` on a uint8 batch held in
host memory, as the worker calls it (copy to the device, the bundle's TorchScript module, the
probabilities back to the host), timed with CUDA events after warm-up, repeated for at least
``--seconds``; images/s, milliseconds per batch, and peak device memory. "bf16" is the same call
inside ``torch.autocast("cuda", dtype=torch.bfloat16)``; a TorchScript module may not honour an
autocast region entered outside it, so the run compares the bf16 probabilities with the fp32
ones and reports whether autocast changed anything (if not, the bf16 row ran in fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def measure(predictor, batch, dtype: str, seconds: float) -> tuple[float, float, float]:
    """(images/s, ms per batch, peak MiB) for one batch size."""
    import torch

    region = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with region:
        for _ in range(3):
            predictor.predict_probs(batch)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        iters, elapsed_ms = 0, 0.0
        start.record()
        while elapsed_ms < seconds * 1000 or iters < 5:
            predictor.predict_probs(batch)
            iters += 1
            end.record()
            end.synchronize()
            elapsed_ms = start.elapsed_time(end)
    peak = torch.cuda.max_memory_allocated() / 2**20
    return batch.shape[0] * iters / (elapsed_ms / 1000), elapsed_ms / iters, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="bundles/default")
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timed time per measurement")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, help="also write the results (Markdown) here")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            f"No CUDA device is available (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
            "nothing was measured. Run this on a machine with a GPU."
        )
        return 0

    from worker.runtime.predictor import Predictor

    predictor = Predictor(args.bundle, device=args.device, max_batch=max(args.sizes))
    predictor.load()
    height, width = predictor.input_size
    props = torch.cuda.get_device_properties(predictor.device)
    lines = [
        "# GPU inference throughput of worker/runtime (benchmarks.gpu_runtime)",
        "",
        f"- command: `python -m benchmarks.gpu_runtime {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- device: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}; host {platform.machine()}, {os.cpu_count()} CPUs",
        f"- bundle: {args.bundle} ({predictor.version}), input {height}x{width} uint8 from host memory",
        "",
        "| dtype | batch | images/s | ms / batch | peak MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    generator = torch.Generator().manual_seed(0)
    for dtype in args.dtypes:
        for size in args.sizes:
            batch = torch.randint(0, 256, (size, 3, height, width), dtype=torch.uint8, generator=generator)
            try:
                rate, ms, peak = measure(predictor, batch, dtype, args.seconds)
                row = f"| {dtype} | {size} | {rate:,.0f} | {ms:.2f} | {peak:,.0f} |"
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                row = f"| {dtype} | {size} | out of memory | | |"
            lines.append(row)
            print(row, flush=True)
    if "bf16" in args.dtypes:
        probe = torch.randint(0, 256, (64, 3, height, width), dtype=torch.uint8, generator=generator)
        fp32 = predictor.predict_probs(probe)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = predictor.predict_probs(probe)
        diff = (fp32 - bf16).abs().max().item()
        verdict = (
            f"bf16 autocast changed the probabilities (max abs difference {diff:.2e}): it took effect"
            if diff > 0
            else "bf16 autocast changed nothing (identical probabilities): the TorchScript module ran in fp32"
        )
        lines += ["", verdict]
        print("\n" + verdict)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
