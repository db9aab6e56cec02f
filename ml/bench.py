"""Training and inference throughput of one model on this device (a benchmark, not a test).

    python -m ml bench model=resnet20 batch_size=512 steps=50
    python -m ml bench model=preact_resnet18 batch_size=512 steps=100 compile=true   # on CUDA

A training step is the one `ml.train` runs: normalise uint8 images already on the device, random
crop + flip on the batch, forward (channels_last; bf16 autocast or fp32), cross-entropy,
backward, SGD Nesterov step. ``precisions=fp32,bf16`` (the default) measures both, one after the
other in the same run, and prints them side by side with the ratio to the first. Images are random, so data loading is not measured (in training the
whole set already lives on the device). The first ``warmup`` steps (cudnn autotuning,
torch.compile) are not timed; CUDA is timed with events, the CPU with perf_counter. "Epoch" means
``epoch_images`` images (45,000: CIFAR-10's training set less a 5,000 validation split).
Reports device, torch version, threads, images/s and the implied seconds per epoch; ``json=path``
also writes them to a file.

Measured: see the README's "Offline ML" section.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ml import precision as prec
from ml.augment import augment_batch, normalize
from ml.config import load_config
from ml.models import build_model, count_flops, count_parameters
from ml.runs import pick_device
from ml.train import param_groups


@dataclass
class BenchConfig:
    model: str = "resnet20"
    width: float = 1.0  # channel multiplier (ResNets)
    num_classes: int = 10
    batch_size: int = 512
    steps: int = 50  # timed training steps
    warmup: int = 5  # untimed steps before (compilation, autotuning)
    infer_batches: int = 0  # timed inference batches; 0 = same as steps
    epoch_images: int = 45_000  # images per epoch for the implied epoch time
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile the model
    precisions: str = "fp32,bf16"  # measured one after the other in this run (auto | bf16 | fp32)
    threads: int = 0  # >0: torch.set_num_threads
    seed: int = 0
    json: str = ""  # also write the results to this file


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Timer:
    """Elapsed seconds between start() and stop(): CUDA events on a GPU, perf_counter otherwise."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1000.0
        return time.perf_counter() - self.t0


def bench(cfg: BenchConfig, precision: str = "auto") -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    dtype = prec.resolve(precision, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = build_model(
        cfg.model, num_classes=cfg.num_classes, **({"width": cfg.width} if cfg.model != "plain_cnn" else {})
    )
    params, macs = count_parameters(model), count_flops(model)
    model = model.to(device, memory_format=torch.channels_last)
    forward = torch.compile(model) if cfg.compile else model
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.01, momentum=0.9, nesterov=True)
    mean = torch.tensor([0.49, 0.48, 0.45], device=device)
    std = torch.tensor([0.25, 0.24, 0.26], device=device)
    images = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    timer = Timer(device)

    def train_step() -> None:
        x = augment_batch(normalize(images, mean, std), crop_padding=4, flip=True, generator=gen)
        with prec.autocast(device, dtype):
            loss = F.cross_entropy(forward(x.contiguous(memory_format=torch.channels_last)).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step() -> None:
        x = normalize(images, mean, std).contiguous(memory_format=torch.channels_last)
        with prec.autocast(device, dtype):
            forward(x)

    model.train()
    t0 = time.perf_counter()
    for _ in range(cfg.warmup):
        train_step()
    if cuda:
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - t0
    timer.start()
    for _ in range(cfg.steps):
        train_step()
    train_s = timer.stop()

    model.eval()
    infer_batches = cfg.infer_batches or cfg.steps
    for _ in range(cfg.warmup):
        infer_step()
    timer.start()
    for _ in range(infer_batches):
        infer_step()
    infer_s = timer.stop()

    train_ips = cfg.steps * cfg.batch_size / train_s
    result = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": cfg.model,
        "precision": prec.name(dtype),
        "params": params,
        "macs_per_image": macs,
        "config": asdict(cfg),
        "warmup_s": warmup_s,
        "train_images_per_s": train_ips,
        "train_step_ms": 1000 * train_s / cfg.steps,
        "epoch_s": cfg.epoch_images / train_ips,
        "infer_images_per_s": infer_batches * cfg.batch_size / infer_s,
    }
    if cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ml bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of BenchConfig fields")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(None, args.overrides, cls=BenchConfig)
    except ValueError as exc:
        parser.error(str(exc))
    if cfg.steps < 1 or cfg.batch_size < 1:
        parser.error("steps and batch_size must be at least 1")
    results = [bench(cfg, p.strip()) for p in cfg.precisions.split(",") if p.strip()]
    r = results[0]
    print(f"device   {r['device']} ({r['device_type']}) | torch {r['torch']} | {r['threads']} threads")
    print(
        f"model    {r['model']} width {cfg.width} | {r['params']:,} parameters | {r['macs_per_image'] / 1e6:.1f} M MACs/image"
    )
    print(
        f"setup    batch {cfg.batch_size} | {cfg.warmup} warm-up steps (not timed) | compile {cfg.compile} | channels_last"
    )
    base = r["train_images_per_s"]
    print(
        f"{'precision':<10}{'train img/s':>12}{'ms/step':>10}{'s/epoch':>10}{'infer img/s':>13}{'train vs first':>16}"
    )
    for r in results:
        print(
            f"{r['precision']:<10}{r['train_images_per_s']:>12,.0f}{r['train_step_ms']:>10.1f}{r['epoch_s']:>10.1f}"
            f"{r['infer_images_per_s']:>13,.0f}{r['train_images_per_s'] / base:>15.2f}x"
        )
        if "max_memory_gib" in r:
            print(f"          memory {r['max_memory_gib']:.2f} GiB peak")
    print(f"(epoch = {cfg.epoch_images:,} images)")
    if r["device_type"] == "cpu":
        speedup = prec.cpu_bf16_speedup()
        print(
            f"precision=auto here: {prec.name(prec.resolve('auto', torch.device('cpu')))}"
            + (f" (a bf16 convolution at {speedup:.2f}x fp32's speed" if speedup else " (no native bf16")
            + f"; bf16 needs >= {prec.BF16_MIN_SPEEDUP}x)"
        )
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(results, indent=2))
