"""Train the fast net (``model=fastnet``) with the fast-training recipe, and time it to accuracy.

    python -m ml speedrun seeds=0,1,2                       # time to 93% / 94%, mean +- std over seeds
    python -m ml speedrun --config ml/configs/fastnet.yaml seeds=0 name=fast-s0
    python -m ml speedrun epochs=2 train_limit=2000 seeds=0 # a smoke run

The recipe follows the published airbench line (Jordan 2024, arXiv 2404.00498; Page's ResNet-9 and
hlb-CIFAR10 before it), re-implemented here from the paper's description:
- the net: a frozen 2x2 patch-whitening conv initialised from training patches, three groups of
  3x3 conv + max-pool + batch norm (scale fixed at 1) + GELU, a 3x3 max-pool and a linear head
  scaled by 1/9 (``ml.models.FastNet``);
- Nesterov SGD on a summed label-smoothed loss with batch 1024, learning rate and weight decay given
  per 1024 images and decoupled from each other, a 64x learning rate on batch-norm biases; a
  triangular schedule (0.2 -> 1 at 23% -> 0.07); the whitening bias trained for 3 epochs only;
- a lookahead EMA: every 5 steps the weights are pulled back to a moving average whose decay
  rises from 0 to 0.95^5 with the cube of progress; the final weights are the average;
- augmentation on batched tensors: a flip that alternates per image across epochs (random on the
  first) and a random translation of up to 2 pixels (reflect padding);
- evaluation with test-time augmentation (mirror + one-pixel translations, ``ml.tta``).

Every ``eval_every`` epochs the current weights are evaluated on the validation split (the seeded
500-per-class hold-out of ``data``) with TTA; evaluation is clocked apart from training, and the
training seconds at which validation first reaches each of ``targets`` are recorded. Each seed
writes a run folder like ``ml train`` does (``config.yaml``, ``metrics.csv``, ``best.pt`` =
``checkpoint.pt`` = the final weights, in the ``ml.checkpoint`` format, so ``ml export`` and
``ml evaluate`` take it), and the command prints and writes ``speedrun.json`` with the summary.

Measured: see the README's "Offline ML" section (hardware, images/s, times to 93% and 94%).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ml import precision as prec
from ml.augment import cutout, normalize, random_crop
from ml.bench import device_name
from ml.checkpoint import save_checkpoint
from ml.config import load_config
from ml.data import load_source, stratified_split
from ml.models import build_model, count_flops, count_parameters
from ml.runs import pick_device, progress, run_dir
from ml.tta import TestTimeAugment


# ============================================================================= config
@dataclass
class SpeedrunConfig:
    name: str = "fastnet"  # run folder suffix; each seed gets <name>-s<seed>
    out_dir: str = "runs"
    seeds: str = "0"  # comma-separated; one run per seed
    # data (as in ml train)
    data: str = "../shared/datasets/cifar10-jpeg/train"
    val_per_class: int = 500
    split_seed: int = 0
    train_limit: int = 0  # >0: only this many training images (smoke runs)
    # model
    width: float = 1.0  # channel multiplier: 64/256/256 x width
    norm: bool = True  # batch norm (ablation)
    whiten: bool = True  # frozen whitening first layer; false = a learned 2x2 conv (ablation)
    # optimisation (lr and weight decay per 1024 images, decoupled)
    epochs: float = 10.0
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0  # learning-rate multiplier of batch-norm biases
    label_smoothing: float = 0.2
    whiten_bias_epochs: float = 3.0  # train the whitening bias this long, then freeze it
    lookahead: bool = True  # EMA lookahead of the weights
    # augmentation
    flip: bool = True  # alternating flip
    translate: int = 2  # random translation in pixels; 0 = off
    cutout: int = 0  # zero a random square of this many pixels per image (longer runs); 0 = off
    # evaluation
    tta: int = 2  # 0 none | 1 mirror | 2 mirror + translate
    eval_every: int = 1  # evaluate every N epochs (and always at the end)
    targets: str = "0.93,0.94"  # validation accuracies to time
    # runtime
    precision: str = "auto"  # auto | bf16 | fp32
    device: str = "auto"
    threads: int = 0
    progress: bool = False


# ============================================================================= helpers
def triangle(step: int, total: int, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    return float(np.interp(step, [0, peak_at * total, total], [start, 1.0, end]))


class Lookahead:
    """Every few steps, pull the weights (and batch-norm statistics) to a moving average."""

    def __init__(self, model: torch.nn.Module):
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value, 1 - decay)
                value.copy_(self.shadow[key])


def alternating_flip(x: torch.Tensor, base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip the images whose ``base`` bit differs from the epoch's parity: each image is mirrored
    every other epoch, so two consecutive epochs see both orientations."""
    flip = base ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def evaluate_logits(model: torch.nn.Module, images: torch.Tensor, mean, std, tta: int, dtype) -> torch.Tensor:
    was_training = model.training
    model.eval()
    net = TestTimeAugment(model, tta)
    out = []
    for i in range(0, len(images), 1000):
        x = normalize(images[i : i + 1000], mean, std).contiguous(memory_format=torch.channels_last)
        with prec.autocast(images.device, dtype):
            out.append(net(x).float().cpu())
    model.train(was_training)
    return torch.cat(out)


# ============================================================================= one run
def train_one(cfg: SpeedrunConfig, seed: int, data, train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
    torch.manual_seed(seed)
    device = pick_device(cfg.device)
    dtype = prec.resolve(cfg.precision, device)
    run_cfg = dataclasses.replace(cfg, seeds=str(seed), name=f"{cfg.name}-s{seed}")
    out = run_dir(run_cfg)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(run_cfg), sort_keys=False))
    targets = sorted(float(t) for t in cfg.targets.split(",") if t)

    # ---------------------------------------------------------------- data (uint8 on the device)
    train_x = torch.from_numpy(data.images[train_idx]).to(device)
    train_y = torch.from_numpy(data.labels[train_idx]).to(device)
    val_x = torch.from_numpy(data.images[val_idx]).to(device)
    val_y = torch.from_numpy(data.labels[val_idx])
    mean = train_x.float().mean(dim=(0, 2, 3)).div(255)
    std = train_x.float().std(dim=(0, 2, 3)).div(255)

    # ---------------------------------------------------------------- model
    options = {"width": cfg.width, "norm": cfg.norm, "whiten": cfg.whiten}
    model = build_model("fastnet", num_classes=len(data.classes), **options)
    model.init_from_data(normalize(train_x[:5000], mean, std))
    params, macs = count_parameters(model), count_flops(model)
    model = model.to(device, memory_format=torch.channels_last)

    # ---------------------------------------------------------------- optimiser
    # lr and weight decay are given per 1024 images of a summed loss; PyTorch's SGD couples decay
    # to the learning rate, so each group's decay is divided by its learning rate.
    kilostep = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / kilostep
    wd = cfg.weight_decay * cfg.batch_size / kilostep
    lr_bias = lr * cfg.bias_scaler
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in model.named_parameters() if "norm" not in n and p.requires_grad]
    groups = [
        {"params": norm_biases, "lr": lr_bias, "weight_decay": wd / lr_bias, "base_lr": lr_bias},
        {"params": others, "lr": lr, "weight_decay": wd / lr, "base_lr": lr},
    ]
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    lookahead = Lookahead(model) if cfg.lookahead else None
    gen = torch.Generator(device=device).manual_seed(seed)
    flip_base = torch.rand(len(train_x), generator=gen, device=device) < 0.5

    # ---------------------------------------------------------------- loop
    fields = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "images_per_s", "train_s"]
    with open(out / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerow(fields)
    print(
        f"[seed {seed}] {out} | {len(train_x)} train, {len(val_x)} val | fastnet {options} | {params:,} params"
        f" {macs / 1e6:.1f} M MACs | {prec.name(dtype)} on {device}",
        flush=True,
    )
    train_s, eval_s, step, seen = 0.0, 0.0, 0, 0
    reached: dict[str, float | None] = {f"{t:.4f}": None for t in targets}
    row: dict[str, Any] = {}
    epochs = math.ceil(cfg.epochs)
    for epoch in range(epochs):
        model.train()
        if epoch == math.ceil(cfg.whiten_bias_epochs):
            model.whiten.bias.requires_grad_(False)
        t0 = time.perf_counter()
        order = torch.randperm(len(train_x), generator=gen, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        n_epoch = 0
        for i in progress(range(steps_per_epoch), cfg.progress, desc=f"epoch {epoch + 1}"):
            if step >= total_steps:
                break
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = normalize(train_x[idx], mean, std)
            if cfg.translate:
                x = random_crop(x, cfg.translate, gen)
            if cfg.flip:
                x = alternating_flip(x, flip_base[idx], epoch)
            if cfg.cutout:
                x = cutout(x, cfg.cutout, gen)
            y = train_y[idx]
            factor = triangle(step, total_steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            with prec.autocast(device, dtype):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if lookahead is not None and step % 5 == 0:
                lookahead.update(model, decay=0.95**5 * (step / total_steps) ** 3)
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
            n_epoch += len(idx)
        last = epoch == epochs - 1
        if last and lookahead is not None:
            lookahead.update(model, decay=1.0)  # the final weights are the average
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_s = time.perf_counter() - t0
        train_s += epoch_s
        seen += n_epoch
        row = {
            "epoch": epoch + 1,
            "lr": lr * factor,
            "train_loss": (loss_sum / max(1, n_epoch)).item(),
            "train_acc": (correct / max(1, n_epoch)).item(),
            "val_loss": float("nan"),
            "val_acc": float("nan"),
            "epoch_s": epoch_s,
            "images_per_s": n_epoch / epoch_s,
            "train_s": train_s,
        }
        if len(val_x) and (last or (epoch + 1) % cfg.eval_every == 0):
            t1 = time.perf_counter()
            logits = evaluate_logits(model, val_x, mean, std, cfg.tta, dtype)
            eval_s += time.perf_counter() - t1
            row["val_loss"] = F.cross_entropy(logits, val_y).item()
            row["val_acc"] = (logits.argmax(1) == val_y).float().mean().item()
            for key in reached:
                if reached[key] is None and row["val_acc"] >= float(key):
                    reached[key] = train_s
        with open(out / "metrics.csv", "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in fields])
        print(
            f"[seed {seed}] epoch {epoch + 1:2d} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
            f" | val acc {row['val_acc']:.4f} (TTA {cfg.tta}) | {epoch_s:.1f}s {row['images_per_s']:.0f} img/s"
            f" | train {train_s:.0f}s",
            flush=True,
        )

    # ---------------------------------------------------------------- save
    metrics = {
        "val_acc": row["val_acc"],
        "val_loss": row["val_loss"],
        "best_val_acc": row["val_acc"],
        "epoch": row["epoch"],
        "tta": cfg.tta,
        "params": params,
        "macs": macs,
        "val_split": {"per_class": cfg.val_per_class, "seed": cfg.split_seed},
    }
    payload = {
        "arch": "fastnet",
        "model_options": options,
        "classes": data.classes,
        "superclasses": data.superclasses,
        "mean": mean.cpu().tolist(),
        "std": std.cpu().tolist(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": row["epoch"] - 1,
        "best": row["val_acc"],
        "config": dataclasses.asdict(run_cfg) | {"model": "fastnet", "seed": seed, "split": "train"},
        "metrics": metrics,
        "data": {k: v for k, v in data.extra.items() if k != "cache"} | {"source": data.source},
    }
    save_checkpoint(out / "checkpoint.pt", payload)
    save_checkpoint(out / "best.pt", payload)
    result = {
        "seed": seed,
        "run_dir": str(out),
        "final_val_acc": row["val_acc"],
        "train_s": train_s,
        "eval_s": eval_s,
        "images_per_s": seen / train_s,
        "time_to": reached,
    }
    (out / "speedrun.json").write_text(json.dumps(result, indent=2))
    return result


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def summarise(cfg: SpeedrunConfig, results: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    targets = list(results[0]["time_to"]) if results else []
    summary = {
        "hardware": device_name(device),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": prec.name(prec.resolve(cfg.precision, device)),
        "config": dataclasses.asdict(cfg),
        "runs": results,
        "final_val_acc": mean_std([r["final_val_acc"] for r in results]),
        "train_s": mean_std([r["train_s"] for r in results]),
        "images_per_s": mean_std([r["images_per_s"] for r in results]),
        "time_to": {},
    }
    for t in targets:
        times = [r["time_to"][t] for r in results if r["time_to"][t] is not None]
        summary["time_to"][t] = {"reached": f"{len(times)} of {len(results)}", "train_s": mean_std(times)}
    return summary


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ml speedrun", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file with SpeedrunConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of SpeedrunConfig fields")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, cls=SpeedrunConfig)
        prec.resolve(cfg.precision, torch.device("cpu"))
    except ValueError as exc:
        parser.error(str(exc))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    data = load_source(cfg.data, split="train")
    if cfg.val_per_class:
        train_idx, val_idx = stratified_split(data.labels, cfg.val_per_class, cfg.split_seed)
    else:
        train_idx, val_idx = np.arange(len(data)), np.array([], dtype=np.int64)
    if cfg.train_limit:
        train_idx = np.random.default_rng(0).permutation(train_idx)[: cfg.train_limit]
    seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    results = [train_one(cfg, seed, data, train_idx, val_idx) for seed in seeds]
    summary = summarise(cfg, results, device)
    out = Path(cfg.out_dir) / f"speedrun-{cfg.name}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nspeedrun {cfg.name}: {len(results)} seed(s) on {summary['hardware']}, {summary['precision']}")
    print(f"  final validation accuracy (TTA {cfg.tta}): {summary['final_val_acc']}")
    print(f"  training time: {summary['train_s']} s at {summary['images_per_s']} images/s")
    for t, v in summary["time_to"].items():
        print(f"  time to {float(t):.0%}: {v['train_s']} s (reached by {v['reached']})")
    print(f"  written: {out}")
