"""One seed of ``python -m ml speedrun``, top to bottom: data, model, optimiser, loop, save.

The configuration is `ml.speedrun.config.SpeedrunConfig`; the recipe's pieces (optimiser groups,
schedule, lookahead, augmentation, TTA evaluation) are in `ml.speedrun.recipe`; the package's
docstring describes the recipe."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ml import precision as prec
from ml.augment import normalize
from ml.checkpoint import save_checkpoint
from ml.data import load_source, stratified_split
from ml.models import build_model, count_flops, count_parameters
from ml.models.fast import whitening_sample
from ml.runs import eta, pick_device, progress, run_dir
from ml.speedrun.config import SpeedrunConfig
from ml.speedrun.distill import Teacher, distill_loss
from ml.speedrun.recipe import Lookahead, augment, evaluate_logits, mix, nesterov_sgd, set_lr, triangle


def load_split(cfg: SpeedrunConfig) -> tuple[Any, np.ndarray, np.ndarray]:
    """(data, train_idx, val_idx): the training source, its seeded hold-out and the ``train_limit``
    subset (the same for every seed, so seeds differ only in the run)."""
    data = load_source(cfg.data, split="train")
    if cfg.val_per_class:
        train_idx, val_idx = stratified_split(data.labels, cfg.val_per_class, cfg.split_seed)
    else:
        train_idx, val_idx = np.arange(len(data)), np.array([], dtype=np.int64)
    if cfg.train_limit:
        train_idx = np.random.default_rng(0).permutation(train_idx)[: cfg.train_limit]
    return data, train_idx, val_idx


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
    if cfg.widths:
        options["widths"] = [int(w) for w in cfg.widths.split(",")]
    model = build_model("fastnet", num_classes=len(data.classes), **options)
    model.init_from_data(normalize(whitening_sample(train_x, seed=seed), mean, std))
    params, macs = count_parameters(model), count_flops(model)
    model = model.to(device, memory_format=torch.channels_last)

    # ---------------------------------------------------------------- optimiser
    opt = nesterov_sgd(model, cfg)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    lookahead = Lookahead(model) if cfg.lookahead else None
    gen = torch.Generator(device=device).manual_seed(seed)
    teacher = Teacher(cfg.teacher, data.classes, mean, std, device, dtype) if cfg.teacher else None
    flip_base = torch.rand(len(train_x), generator=gen, device=device) < 0.5
    mix_rng = np.random.default_rng(seed)  # mixup's per-batch weights

    # ---------------------------------------------------------------- loop
    fields = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "images_per_s", "train_s"]
    with open(out / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerow(fields)
    print(
        f"[seed {seed}] {out} | {len(train_x)} train, {len(val_x)} val | fastnet {options} | {params:,} params"
        f" {macs / 1e6:.1f} M MACs | {prec.name(dtype)} on {device}"
        + (f" | distilled from {len(teacher.members)} teacher(s)" if teacher else ""),
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
            x = augment(normalize(train_x[idx], mean, std), cfg, flip_base[idx], epoch, gen)
            y = target = train_y[idx]
            if cfg.mixup:
                x, target = mix(x, y, len(data.classes), float(mix_rng.beta(cfg.mixup, cfg.mixup)), gen)
            factor = triangle(step, total_steps)
            set_lr(opt, factor)
            with prec.autocast(device, dtype):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            if teacher is None:
                loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing, reduction="sum")
            else:
                soft = teacher.probs(x, cfg.distill_temperature)
                loss = distill_loss(
                    logits.float(), target, soft, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature,
                    label_smoothing=cfg.label_smoothing,
                )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if lookahead is not None and step % 5 == 0:
                lookahead.update(model, decay=0.95**5 * (step / total_steps) ** 3)
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == (target.argmax(1) if cfg.mixup else y)).sum()  # mixup: the larger part
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
            "lr": opt.param_groups[-1]["base_lr"] * factor,  # the weights' rate (not the biases')
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
            f" | train {train_s:.0f}s" + ("" if last else f", about {eta(train_s, epoch + 1, epochs)} to go"),
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
