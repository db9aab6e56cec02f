"""The measurements of one predictor: latency of one image end to end, batched throughput, the
weights' memory layout, and explanations against none."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.runtime.ceiling import Ceiling, macs_per_image, matmul_gflops
from benchmarks.runtime.inputs import cifar_jpegs, photo_jpeg
from ml.tta import views
from worker.runtime.images import decode_for_model
from worker.runtime.predictor import Predictor


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


def layout_comparison(predictor: Predictor, one: torch.Tensor, args: argparse.Namespace) -> None:
    """The raw forward with the weights as TorchScript loads them (the default layout) against the
    runtime's (channels_last, as the module's input), interleaved run by run: one image and a chunk."""
    loaded = predictor.load()
    if loaded.dtype == torch.qint8:  # int8 weights are packed for the CPU's kernels: no layout to compare
        return
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


_matmul_rates: dict[torch.dtype, float | None] = {}


def arithmetic(loaded, rate: float, args: argparse.Namespace) -> None:
    """The bundle's arithmetic against the throughput of the first batch size (pre-decoded) and
    against this CPU's matmul rate in the module's dtype (`benchmarks.runtime.ceiling`)."""
    print(f"\n== arithmetic (batch {args.batches[0]}, pre-decoded)")
    counted = None if loaded.tta is None else macs_per_image(loaded.manifest.members, loaded.tta)
    if counted is None:
        print("the manifest does not record every member's MACs and the TTA level: nothing to compare")
        return
    if loaded.dtype not in _matmul_rates:
        _matmul_rates[loaded.dtype] = matmul_gflops(loaded.dtype)
    ceiling = Ceiling(counted[0], counted[1], views(loaded.tta), rate, _matmul_rates[loaded.dtype])
    for line in ceiling.lines(loaded.precision, args.target):
        print(line)


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
    rate = predict_rate = 0.0
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
        if batch == args.batches[0]:
            rate, predict_rate = batch / statistics.median(full), batch / statistics.median(predict_only)
    arithmetic(loaded, predict_rate, args)
    return {"precision": loaded.precision, "tta": loaded.tta, "one": one_cifar, "batch": args.batches[0], "rate": rate}
