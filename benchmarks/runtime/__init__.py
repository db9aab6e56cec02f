"""Benchmark of the inference runtime on the CPU: one image end to end, and batched throughput.

(`inputs`: the images and random-init bundles it measures; `measure`: latency, throughput, the
weight layout and explanations of one predictor; `ceiling`: the arithmetic against the matmul
rate; `uploads`: the worst-case uploads at the pixel limit; `__main__`: the command.)

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

After each precision's throughput it prints the bundle's arithmetic (`ceiling`): multiply-accumulates
per image from the manifest (members' MACs x TTA views), the GFLOP/s the measured throughput does,
this CPU's rate for a 2048 x 2048 matmul in the module's dtype measured in the same run, the
images/s that rate allows, and what ``--target`` images/s (default 500) would ask of the CPU.

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

from benchmarks.runtime.inputs import DEFAULT_BUNDLE, cifar_jpegs, photo_jpeg, random_bundle

__all__ = ["DEFAULT_BUNDLE", "cifar_jpegs", "photo_jpeg", "random_bundle"]
