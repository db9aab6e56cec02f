"""Benchmark of the inference runtime on the CPU: one image end to end, and batched throughput.

    python -m benchmarks.runtime [--bundle bundles/default] [--runs 200] [--batches 64 256]

What it measures, all in this one run and on the same bundle:

* latency of one image end to end (JPEG bytes -> `decode_for_model` -> `Predictor.predict`),
  median and p95 over ``--runs``, for a CIFAR-sized 32x32 JPEG, a 640x480 photo and a 4000x3000
  photo; against the baseline of the raw TorchScript forward of one pre-decoded image;
* throughput in images/s with batches of ``--batches`` (decode + predict, and predict alone on
  pre-decoded arrays), against the baseline of the same images one at a time;
* memory (peak RSS growth) and time of `prepare_upload` and `decode_for_model` for small files
  that decode to the most pixels allowed (40 MP RGB, RGBA and 16-bit PNGs), each in a fresh
  process, to size web and worker processes.

It prints the hardware (CPUs, load average, torch version and threads) because the numbers mean
nothing without it. This is a benchmark: it prints numbers and asserts nothing. The bundle is
``--bundle``, else ``bundles/default``; ``--random resnet20`` exports a random-init model of that
architecture into a temporary folder instead (same compute as a trained one, so the timings hold
before any training has finished; ``--tta 2 --members 3`` for the shape of the default bundle),
and ``--tiny`` a ResNet-20 at width 0.25 for a quick try. ``--precisions fp32,auto`` (the default)
measures the module in float32 and then in the runtime's default precision (bf16 on CPUs with bf16
in hardware, for bundles that list it), and prints the second against the first.

``--explain`` is a mode of its own: per-image time end to end with explanations (the bundle's
``explain``: Grad-CAM of the top-5, members, OOD score, plus the PNG of the model's input the job
stores) against without (``Predictor.predict``), interleaved run by run; the goal is <= 1.5x.

    python -m benchmarks.runtime --explain --random fastnet --tta 2 --members 3 --runs 50
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worker.runtime.images import decode_for_model
from worker.runtime.predictor import Predictor, configure_threads

DEFAULT_BUNDLE = Path("bundles/default")
# The CIFAR-10 JPEGs in the shared/ folder beside the checkout, wherever the checkout is.
CIFAR_JPEG_TREE = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cifar10-jpeg" / "train"


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (smooth gradients, soft blobs, a little noise) of the given size."""
    rng = np.random.default_rng(seed)
    small_w, small_h = 96, 72
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    base = np.stack([x / small_w, y / small_h, 1 - x / small_w], axis=-1) * 200
    for _ in range(8):
        cy, cx, r = rng.uniform(0, small_h), rng.uniform(0, small_w), rng.uniform(4, 20)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
        base = base * (1 - blob) + rng.uniform(0, 255, 3) * blob
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    noisy = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def cifar_jpegs(n: int) -> list[bytes]:
    """Real 32x32 CIFAR-10 JPEGs when the data set is on this machine, else generated ones."""
    root = CIFAR_JPEG_TREE
    files = sorted(root.glob("*/*.jpg"))[:: max(1, 50000 // max(n, 1))][:n] if root.is_dir() else []
    if len(files) == n:
        return [f.read_bytes() for f in files]
    return [photo_jpeg(32, 32, seed=i) for i in range(n)]


def timed(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def random_bundle(directory: Path, arch: str, width: float | None = None, *, tta: int = 0, members: int = 1) -> Path:
    """A bundle of random-init models: the same compute as trained ones of that architecture."""
    from ml.export import export_bundle
    from ml.models import build_model

    torch.manual_seed(0)
    options = {} if width is None else {"width": width}
    models = [build_model(arch, num_classes=10, **options) for _ in range(members)]
    out = directory / arch
    export_bundle(
        [(m, {"arch": arch, **options, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}) for m in models],
        out,
        tta=tta,
        classes=[f"class{i}" for i in range(10)],
        name=f"benchmark-random-{arch}",
        version=f"benchmark-random-{arch}" + (f"-w{width}" if width is not None else ""),
        command=f"python -m benchmarks.runtime --random {arch}",
    )
    return out


WORST_CASE = r"""
import io, resource, sys, time
import numpy as np
from worker.runtime.images import DEFAULT_MAX_PIXELS, decode_for_model, prepare_upload
from tests.hostile import png_raw

kind, func = sys.argv[1], sys.argv[2]
width = 8000
height = DEFAULT_MAX_PIXELS // width  # exactly at the pixel limit
if kind == "16-bit grey PNG":
    row = (np.arange(width, dtype=np.uint16) * 8).astype(">u2").tobytes()
    data = png_raw(width, height, bit_depth=16, colour_type=0, rows=(row for _ in range(height)))
elif kind == "RGBA PNG":
    row = np.tile(np.array([10, 20, 30, 128], np.uint8), width).tobytes()
    data = png_raw(width, height, bit_depth=8, colour_type=6, rows=(row for _ in range(height)))
else:
    row = np.tile(np.array([10, 20, 30], np.uint8), width).tobytes()
    data = png_raw(width, height, bit_depth=8, colour_type=2, rows=(row for _ in range(height)))


def peak_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak across exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


before = peak_kib()
start = time.perf_counter()
decode_for_model(data) if func == "decode_for_model" else prepare_upload(data, max_bytes=len(data))
seconds = time.perf_counter() - start
peak = (peak_kib() - before) / 1024
print(f"{len(data) / 1e6:.1f} {peak:.0f} {seconds:.2f} {width}x{height}")
"""


def worst_case_uploads() -> None:
    """Memory and time for tiny files that decode to the most pixels allowed, each in a fresh process."""
    import subprocess

    print("\n== worst-case uploads at the pixel limit (fresh process each; RSS growth during the call)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for kind in ("RGB PNG", "RGBA PNG", "16-bit grey PNG"):
        for func in ("prepare_upload", "decode_for_model"):
            proc = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", WORST_CASE, kind, func],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            if proc.returncode != 0:
                print(f"{kind:16s} {func:17s} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            size_mb, peak, seconds, dims = proc.stdout.split()
            print(f"{kind:16s} {dims} ({size_mb} MB file)  {func:17s} +{peak:>5s} MiB peak RSS  {seconds} s")


def explanations(predictor: Predictor, runs: int, warmup: int) -> None:
    """Per-image time of what the worker does with explanations (decode, the module's explain, the
    stored PNG of the model's input) against without (decode, forward), interleaved run by run so
    that a change of load on the machine hits both alike."""
    from worker.runtime.explain import predict_explained, supports_explain
    from worker.runtime.pictures import model_input_png

    height, width = predictor.input_size
    print(f"\n== explanations: one image end to end, {runs} interleaved runs after {warmup} warm-up")
    if not supports_explain(predictor):
        print("this bundle has no explain method: nothing to compare")
        return
    inputs = {"CIFAR 32x32 JPEG": cifar_jpegs(1)[0], "photo 640x480 JPEG": photo_jpeg(640, 480, seed=1)}
    for name, data in inputs.items():

        def plain(data=data):
            return predictor.predict([decode_for_model(data, (height, width))])

        def explained(data=data):
            [r] = predict_explained(predictor, [decode_for_model(data, (height, width))])
            model_input_png(r.model_input)
            return r

        for _ in range(warmup):
            plain(), explained()
        t_plain, t_explained = [], []
        for _ in range(runs):
            for fn, times in ((plain, t_plain), (explained, t_explained)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        a, b = statistics.median(t_plain), statistics.median(t_explained)
        print(f"{name:22s} without: median {ms(a)}  p95 {ms(p95(t_plain))}")
        print(f"{'':22s} with explanations: median {ms(b)}  p95 {ms(p95(t_explained))}  = {b / a:4.2f}x (goal <= 1.5x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtime", description=__doc__.split("\n\n")[0])
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
        help="comma-separated runtime precisions (auto | bf16 | fp32, worker.runtime.precision) measured one after "
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


def layout_comparison(predictor: Predictor, one: torch.Tensor, args: argparse.Namespace) -> None:
    """The raw forward with the weights as TorchScript loads them (the default layout) against the
    runtime's (channels_last, as the module's input), interleaved run by run: one image and a chunk."""
    loaded = predictor.load()
    as_saved = torch.jit.load(str(loaded.path / loaded.manifest.module_file), map_location=loaded.device).eval()
    as_saved.to(loaded.dtype)
    chunk = one.repeat(min(predictor.max_batch, 64), 1, 1, 1)
    runs = max(5, args.runs // 4)
    for label, x in (("one image", one), (f"batch {len(chunk)}", chunk)):
        saved_t, runtime_t = [], []
        with torch.inference_mode():
            for module in (as_saved, loaded.module):  # warm-up
                timed(lambda module=module, x=x: module(x), 1, args.warmup // 2)
            for _ in range(runs):
                saved_t += timed(lambda x=x: as_saved(x), 1, 0)
                runtime_t += timed(lambda x=x: loaded.module(x), 1, 0)
        a, b = statistics.median(saved_t), statistics.median(runtime_t)
        print(
            f"{'weights as saved vs channels_last, ' + label:44s} median {ms(a)} vs {ms(b)}"
            f" = {a / b:4.2f}x faster in the runtime's layout"
        )


def measure(predictor: Predictor, args: argparse.Namespace) -> dict[str, object]:
    """Latency of one image and batched throughput for one predictor (one precision)."""
    module = predictor.load().module
    height, width = predictor.input_size
    loaded = predictor.load()
    print(
        f"\n######## precision {predictor.precision or 'auto'}: the module runs in {loaded.precision}"
        f" at TTA level {loaded.tta}"
    )
    # --------------------------------------------------------------------- latency, one image
    print(f"\n== latency of one image, {args.runs} runs after {args.warmup} warm-up")
    one = torch.from_numpy(decode_for_model(cifar_jpegs(1)[0], (height, width)))[None]
    with torch.inference_mode():
        raw = timed(lambda: module(one), args.runs, args.warmup)
    base = statistics.median(raw)
    print(f"{'baseline: raw module forward, pre-decoded':44s} median {ms(base)}  p95 {ms(p95(raw))}")
    inputs = {
        "CIFAR 32x32 JPEG": cifar_jpegs(1)[0],
        "photo 640x480 JPEG": photo_jpeg(640, 480, seed=1),
        "photo 4000x3000 JPEG": photo_jpeg(4000, 3000, seed=2),
    }
    layout_comparison(predictor, one, args)
    one_cifar = base
    for name, data in inputs.items():
        decode = timed(lambda data=data: decode_for_model(data, (height, width)), args.runs, args.warmup)
        end_to_end = timed(
            lambda data=data: predictor.predict([decode_for_model(data, (height, width))]), args.runs, args.warmup
        )
        med = statistics.median(end_to_end)
        one_cifar = med if name.startswith("CIFAR") else one_cifar
        print(
            f"{'end to end: ' + name + f' ({len(data) // 1024} KiB)':44s} median {ms(med)}  p95 {ms(p95(end_to_end))}"
            f"  = {med / base:5.1f}x baseline; decode alone median {ms(statistics.median(decode))}"
        )

    # --------------------------------------------------------------------- throughput, batches
    chunk = predictor.max_batch
    print(
        f"\n== throughput (images/s), best and median of {args.batch_repeats} repeats;"
        f" forward passes of at most {chunk} images, as the worker runs them"
    )
    n = max(args.batches)
    jpegs = cifar_jpegs(n)
    arrays = [decode_for_model(d, (height, width)) for d in jpegs]
    sample = arrays[: min(n, 64)]
    singles = timed(lambda: [predictor.predict([a]) for a in sample], max(1, args.batch_repeats), 1)
    single_rate = len(sample) / statistics.median(singles)
    print(f"{'baseline: predict one at a time (pre-decoded)':52s} {single_rate:9.1f} images/s (median)")
    rate = 0.0
    for batch in args.batches:
        jp, ar = jpegs[:batch], arrays[:batch]
        predict_only = timed(lambda ar=ar: predictor.predict(ar), args.batch_repeats, 1)
        full = timed(
            lambda jp=jp: predictor.predict([decode_for_model(d, (height, width)) for d in jp]), args.batch_repeats, 1
        )
        for label, times in (
            (f"batch {batch}: predict (pre-decoded)", predict_only),
            (f"batch {batch}: decode + predict", full),
        ):
            best, med = batch / min(times), batch / statistics.median(times)
            print(f"{label:52s} {med:9.1f} images/s (median), best {best:9.1f}  = {med / single_rate:5.1f}x baseline")
        if batch > chunk:  # the same batch in one forward pass, for comparison with the chunks
            predictor.max_batch = batch
            whole = timed(lambda ar=ar: predictor.predict(ar), args.batch_repeats, 1)
            predictor.max_batch = args.chunk or None
            med = batch / statistics.median(whole)
            chunked = batch / statistics.median(predict_only)
            print(
                f"{f'batch {batch}: predict in one pass of {batch}':52s} {med:9.1f} images/s (median);"
                f" chunks of {chunk} = {chunked / med:4.2f}x that"
            )
        rate = batch / statistics.median(full) if batch == args.batches[0] else rate
    return {"precision": loaded.precision, "tta": loaded.tta, "one": one_cifar, "batch": args.batches[0], "rate": rate}


if __name__ == "__main__":
    sys.exit(main())
