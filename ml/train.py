"""Train one model on a CIFAR-style data set.

    python -m ml train model=resnet20 epochs=30 name=resnet20-cpu
    python -m ml train --config ml/configs/resnet20.yaml seed=1
    python -m ml train data=data/cifar-100-python.tar.gz superclass=fish init_from=runs/<run>/best.pt freeze=stem,layers.0-2 backbone_lr_mult=0.1
    torchrun --nproc-per-node 4 -m ml train --config ml/configs/resnet20.yaml   # DistributedDataParallel

Config: the `TrainConfig` dataclass below; a YAML file may set any field; ``key=value`` overrides
are parsed to the field's type and unknown keys are refused. Each run writes
``runs/<YYYYmmdd-HHMMSS>-<name>/``: ``config.yaml``, ``metrics.csv`` (one row per epoch),
``checkpoint.pt`` (last), ``best.pt`` (best validation accuracy) and TensorBoard logs in ``tb/``.

Measured (2-core Xeon, CPU only, torch 2.13, threads=2, quiet machine): ResNet-20 trains at about
490 images/s, 92 s per epoch; ``model=resnet20 epochs=15 lr=0.15 label_smoothing=0.1 seed=1``
reaches 85.80% on the 5,000-image validation split (86.36% with flip TTA) in 27 minutes, the
first two epochs slowed by a test run beside it.

On CUDA the whole data set lives on the GPU, augmentation runs on batched tensors, and the forward
pass uses bf16 autocast and channels_last. The same code runs on the CPU, slower. Under torchrun
(WORLD_SIZE > 1) every rank takes its shard of each global batch of ``batch_size`` images (nccl on
CUDA, gloo on CPU) and only rank 0 writes files.
Measured: see the README's "Offline ML" section for hardware, times and accuracies.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from ml import precision as prec
from ml.augment import augment_batch, normalize
from ml.checkpoint import read_checkpoint, save_checkpoint
from ml.config import config_from_argv
from ml.config import load_config as load_config_of
from ml.data import load_source, stratified_split
from ml.finetune import head_name, load_backbone, parse_freeze, train_mode
from ml.models import build_model, count_flops, count_parameters
from ml.runs import distributed_setup, pick_device, progress, run_dir, write_tensorboard


# ============================================================================= config
@dataclass
class TrainConfig:
    name: str = "run"  # run folder suffix
    out_dir: str = "runs"  # runs/<timestamp>-<name>/
    seed: int = 0
    # data
    data: str = "../shared/datasets/cifar10-jpeg/train"  # image folder, a CIFAR archive / folder, or cifar10 | cifar100
    data_md5: str = ""  # expected md5 of a CIFAR archive; "" = the official one
    split: str = "train"  # train | test: which part of the source to train on (validation is held out of it)
    label_mode: str = "fine"  # fine | coarse (CIFAR-100's 20 superclasses)
    classes: str = ""  # comma-separated subset of classes (labels remapped to 0..k-1)
    superclass: str = ""  # comma-separated CIFAR-100 superclasses whose fine classes to keep (e.g. fish)
    val_per_class: int = 500  # seeded, stratified hold-out; 0 = train on everything
    split_seed: int = 0  # the split is fixed across runs unless this changes
    train_limit: int = 0  # >0: use only this many training images (tests, smoke runs)
    # model
    model: str = "resnet20"
    width: float = 1.0  # channel multiplier (ResNets)
    norm: bool = True  # batch norm on/off (ablation)
    residual: bool = True  # skip connections on/off (ablation)
    # fine-tuning (transfer learning)
    init_from: str = ""  # checkpoint to start from; its arch, options and normalisation are used
    new_head: bool = False  # re-initialise the classifier even when the class list is the same
    freeze: str = ""  # backbone units to freeze: N (the first N), "backbone", or names e.g. stem,layers.0-2
    backbone_lr_mult: float = 1.0  # learning rate of everything but the classifier, relative to lr
    # optimisation
    epochs: int = 30
    batch_size: int = 128  # global batch (split across ranks under torchrun)
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to norms and biases
    schedule: str = "onecycle"  # onecycle | cosine | step | plateau | constant
    warmup_epochs: float = 1.0  # linear warm-up (cosine, step, constant)
    step_milestones: str = "0.5,0.75"  # fractions of training (step schedule)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # >0: evaluate and save an exponential moving average of the weights
    early_stop_patience: int = 0  # >0: stop after this many epochs without a better val accuracy
    # augmentation
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0  # cutout square size in pixels; 0 = off
    # runtime
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with native bf16) | bf16 | fp32
    compile: bool = False  # torch.compile the model (CUDA)
    threads: int = 0  # >0: torch.set_num_threads
    progress: bool = True
    tensorboard: bool = True  # write TensorBoard scalars to <run>/tb (skipped if tensorboard is missing)
    resume: str = ""  # checkpoint.pt of an interrupted run, resumed in place


def load_config(config_file: str | None, overrides: list[str], cls: type = TrainConfig) -> Any:
    """`TrainConfig` (or ``cls``) from its defaults, the YAML file and ``key=value`` overrides (ml.config)."""
    return load_config_of(config_file, overrides, cls)


# ============================================================================= helpers
def param_groups(
    model: nn.Module, weight_decay: float, head: str | None = None, backbone_lr_mult: float = 1.0
) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only; none on norms and biases. With
    ``backbone_lr_mult`` != 1, parameters outside module ``head`` get an ``lr_mult`` group of their own."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            in_backbone = backbone_lr_mult != 1.0 and not (head and name.startswith(head + "."))
            groups.setdefault((in_backbone, p.ndim > 1), []).append(p)
    out = []
    for in_backbone in (False, True):
        for decays in (True, False):
            if (in_backbone, decays) in groups or not in_backbone:  # keep the two plain groups for resume
                out.append(
                    {
                        "params": groups.get((in_backbone, decays), []),
                        "weight_decay": weight_decay if decays else 0.0,
                        "lr_mult": backbone_lr_mult if in_backbone else 1.0,
                    }
                )
    return out


def lr_factor(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (plateau is handled apart)."""
    progress = step / max(1, total)
    if cfg.schedule == "onecycle":  # linear up for 25%, linear down to 0
        peak = 0.25
        return progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak))
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        rest = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * rest))
    if cfg.schedule == "step":
        milestones = [float(m) for m in cfg.step_milestones.split(",") if m]
        return 0.1 ** sum(progress >= m for m in milestones)
    if cfg.schedule in ("constant", "plateau"):
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


class EMA:
    """Exponential moving average of parameters and buffers (batch-norm statistics included)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1 - self.decay)
            else:
                self.shadow[k].copy_(v)


@torch.no_grad()
def infer(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int = 1000,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on uint8 images (any device), in eval mode, as float32 on the CPU;
    ``dtype`` is the autocast dtype (None = fp32)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device, non_blocking=True), mean, std)
        with prec.autocast(device, dtype):
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


# ============================================================================= train
def train(cfg: TrainConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, device = distributed_setup(pick_device(cfg.device))
    dtype = prec.resolve(cfg.precision, device)
    main_rank = rank == 0
    init = read_checkpoint(cfg.init_from) if cfg.init_from else None
    if init is not None:  # fine-tuning keeps the pretrained architecture
        options = init.get("model_options", {})
        if cfg.model != init["arch"]:
            print(f"init_from {cfg.init_from}: using its architecture {init['arch']} (model={cfg.model} ignored)")
        cfg = dataclasses.replace(cfg, model=init["arch"], **{k: v for k, v in options.items() if hasattr(cfg, k)})
    out = run_dir(cfg) if main_rank else Path()
    if world > 1:  # every rank reports the same run folder
        shared = [str(out)]
        dist.broadcast_object_list(shared, src=0)
        out = Path(shared[0])
    if main_rank:
        (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    log = print if main_rank else (lambda *a, **k: None)

    # ---------------------------------------------------------------- data
    data = load_source(
        cfg.data,
        split=cfg.split,
        label_mode=cfg.label_mode,
        classes=cfg.classes or None,
        superclass=cfg.superclass or None,
        expected_md5=cfg.data_md5 or None,
    )
    if cfg.val_per_class:
        train_idx, val_idx = stratified_split(data.labels, cfg.val_per_class, cfg.split_seed)
    else:
        train_idx, val_idx = np.arange(len(data)), np.array([], dtype=np.int64)
    if cfg.train_limit:
        train_idx = np.random.default_rng(cfg.seed).permutation(train_idx)[: cfg.train_limit]
    # The whole set lives on the device as uint8; batches are cut from it with index tensors.
    train_x = torch.from_numpy(data.images[train_idx]).to(device)
    train_y = torch.from_numpy(data.labels[train_idx]).to(device)
    val_x = torch.from_numpy(data.images[val_idx]).to(device)
    val_y = torch.from_numpy(data.labels[val_idx])
    if init is not None:  # the backbone expects the normalisation it was trained with
        mean, std = torch.tensor(init["mean"]), torch.tensor(init["std"])
    else:
        mean = train_x.float().mean(dim=(0, 2, 3)).div(255).cpu()
        std = train_x.float().std(dim=(0, 2, 3)).div(255).cpu()
    mean_d, std_d = mean.to(device), std.to(device)
    log(
        f"data: {data.source} | {len(train_idx)} train, {len(val_idx)} val, {len(data.classes)} classes"
        f" | device {device}" + (f" x {world} ranks" if world > 1 else "") + f" | {prec.name(dtype)}"
    )

    # ---------------------------------------------------------------- model
    model_options = {"width": cfg.width, "norm": cfg.norm, "residual": cfg.residual} if cfg.model != "plain_cnn" else {}
    model = build_model(cfg.model, num_classes=len(data.classes), **model_options)
    head = head_name(model)
    if init is None and hasattr(model, "init_from_data"):  # e.g. the fast net's whitening layer
        model.init_from_data(normalize(train_x[:5000], mean_d, std_d).cpu())
    if init is not None:
        keep_head = not cfg.new_head and list(init["classes"]) == list(data.classes)
        load_backbone(model, init, keep_head)
        log(f"init_from {cfg.init_from}: backbone loaded, classifier {head!r} {'kept' if keep_head else 'new'}")
    frozen_names = parse_freeze(cfg.freeze, model)
    frozen = [model.get_submodule(n) for n in frozen_names]
    for module in frozen:
        module.requires_grad_(False)
    if frozen_names:
        n_frozen = sum(p.numel() for m in frozen for p in m.parameters())
        log(f"frozen: {', '.join(frozen_names)} ({n_frozen:,} parameters)")
    params, flops = count_parameters(model), count_flops(model)
    log(f"model: {cfg.model} {model_options} | {params / 1e6:.2f} M parameters | {flops / 1e6:.1f} M MACs/image")
    model = model.to(device, memory_format=torch.channels_last)
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward = torch.compile(wrapped) if cfg.compile else wrapped
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 and main_rank else None

    # ---------------------------------------------------------------- optimiser
    groups = param_groups(model, cfg.weight_decay, head=head, backbone_lr_mult=cfg.backbone_lr_mult)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")
    # A final batch smaller than the number of ranks would leave a rank with nothing: drop it.
    steps_per_epoch = len(train_idx) // cfg.batch_size + (len(train_idx) % cfg.batch_size >= world)
    total_steps = cfg.epochs * steps_per_epoch
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.2, patience=3)
        if cfg.schedule == "plateau"
        else None
    )
    start_epoch, best, step, stale = 0, 0.0, 0, 0
    if cfg.resume:
        ckpt = read_checkpoint(cfg.resume)
        model.load_state_dict(ckpt.get("raw_state_dict", ckpt["state_dict"]))
        opt.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in ckpt["state_dict"].items()}
        if plateau is not None and ckpt.get("scheduler"):
            plateau.load_state_dict(ckpt["scheduler"])
        start_epoch, best, stale = ckpt["epoch"] + 1, ckpt["best"], ckpt.get("stale", 0)
        step = start_epoch * steps_per_epoch
        log(f"resumed {cfg.resume} at epoch {start_epoch + 1}")

    # ---------------------------------------------------------------- loop
    metrics_path = out / "metrics.csv"
    fields = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "images_per_s"]
    if main_rank and (not cfg.resume or not metrics_path.exists()):
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)
    tb = write_tensorboard(out, cfg.tensorboard) if main_rank else None
    final: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        train_mode(model, frozen)
        t0 = time.perf_counter()
        # Seeded per epoch: every rank draws the same order, and a resumed run the same as an uninterrupted one.
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        order = order.to(device)
        aug_gen = torch.Generator(device=device).manual_seed((cfg.seed * 100_003 + epoch) * world + rank)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = torch.zeros((), device=device)
        for i in progress(range(steps_per_epoch), cfg.progress and main_rank, desc=f"epoch {epoch + 1}/{cfg.epochs}"):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size][rank::world]  # this rank's shard
            x = normalize(train_x[idx], mean_d, std_d)
            x = augment_batch(
                x, crop_padding=cfg.crop_padding, flip=cfg.flip, cutout_size=cfg.cutout, generator=aug_gen
            )
            y = train_y[idx]
            if plateau is None:
                factor = lr_factor(cfg, step, total_steps, steps_per_epoch)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * factor * g.get("lr_mult", 1.0)
            with prec.autocast(device, dtype):
                logits = forward(x.contiguous(memory_format=torch.channels_last))
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients over ranks here
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
            seen += len(idx)
        if world > 1:
            totals = torch.stack([loss_sum, correct, seen])
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals
            for buffer in model.buffers():  # batch-norm statistics as rank 0 has them
                dist.broadcast(buffer, src=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_s = time.perf_counter() - t0

        # evaluate the weights that would be saved (EMA when on), on rank 0
        row = {
            "epoch": epoch + 1,
            "lr": max(g["lr"] for g in opt.param_groups),
            "train_loss": (loss_sum / seen).item(),
            "train_acc": (correct / seen).item(),
            "val_loss": float("nan"),
            "val_acc": float("nan"),
            "epoch_s": epoch_s,
            "images_per_s": seen.item() / epoch_s,
        }
        eval_model = model
        if main_rank and ema is not None:
            eval_model = build_model(cfg.model, num_classes=len(data.classes), **model_options).to(device)
            eval_model.load_state_dict(ema.shadow)
        if main_rank and len(val_idx):
            logits = infer(eval_model, val_x, mean_d, std_d, dtype=dtype)
            row["val_loss"] = F.cross_entropy(logits, val_y).item()
            row["val_acc"] = (logits.argmax(1) == val_y).float().mean().item()
        improved = bool(len(val_idx)) and row["val_acc"] > best
        best = max(best, row["val_acc"]) if len(val_idx) else best
        stale = 0 if improved else stale + 1
        stop = bool(cfg.early_stop_patience) and stale >= cfg.early_stop_patience
        if world > 1:  # rank 0's validation drives the schedule and early stopping everywhere
            shared = torch.tensor(
                [row["val_loss"], row["val_acc"], best, float(stale), float(stop)], dtype=torch.float64
            )
            dist.broadcast(shared, src=0)
            row["val_loss"], row["val_acc"], best = shared[0].item(), shared[1].item(), shared[2].item()
            stale, stop = int(shared[3].item()), bool(shared[4].item())
        if plateau is not None:
            plateau.step(row["val_acc"] if len(val_idx) else -row["train_loss"])
        final = {"val_acc": row["val_acc"], "val_loss": row["val_loss"], "best_val_acc": best, "epoch": epoch + 1}
        if main_rank:
            with open(metrics_path, "a", newline="") as f:
                csv.writer(f).writerow([row[k] for k in fields])
            if tb is not None:
                for key in fields[1:]:
                    tb.add_scalar(key, row[key], epoch + 1)
                tb.flush()
        log(
            f"epoch {epoch + 1:3d} | lr {row['lr']:.4f} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | {epoch_s:.1f}s {row['images_per_s']:.0f} img/s",
            flush=True,
        )

        # ------------------------------------------------------------ save
        if main_rank:
            payload = {
                "arch": cfg.model,
                "model_options": model_options,
                "classes": data.classes,
                "superclasses": data.superclasses,
                "mean": mean.tolist(),
                "std": std.tolist(),
                "state_dict": {k: v.detach().cpu() for k, v in eval_model.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": plateau.state_dict() if plateau is not None else None,
                "epoch": epoch,
                "best": best,
                "stale": stale,
                "config": dataclasses.asdict(cfg),
                "metrics": {
                    **final,
                    "params": params,
                    "macs": flops,
                    "val_split": {"per_class": cfg.val_per_class, "seed": cfg.split_seed},
                },
                "data": {k: v for k, v in data.extra.items() if k != "cache"} | {"source": data.source},
            }
            if ema is not None:
                payload["raw_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint(out / "checkpoint.pt", payload)
            if improved:
                save_checkpoint(out / "best.pt", payload)
        if stop:
            log(f"early stop: no better val accuracy for {stale} epochs")
            break

    if tb is not None:
        tb.close()
    if world > 1:
        dist.barrier()
        # DistributedDataParallel sits in a reference cycle that holds the process group, so only a
        # GC pass frees it, and that pass could come during interpreter shutdown, where gloo's C++
        # threads abort the rank ("terminate called without an active exception", SIGABRT in about
        # 1 torchrun run in 10 here). Free it now, while Python is fully alive.
        del forward, wrapped
        gc.collect()
        dist.destroy_process_group()
    log(f"done: {out} | {final}")
    return {"run_dir": str(out), **final}


def main(argv: list[str]) -> None:
    train(config_from_argv(argv, TrainConfig, "python -m ml train", __doc__))
