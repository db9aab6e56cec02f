"""Config and runtime of a training run: `TrainConfig` with its commented defaults, `load_config`
(YAML and ``key=value`` overrides, type-checked by ml.config), the `Runtime` (rank, world size,
device, precision), the architecture an ``init_from`` checkpoint imposes, and the run folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from ml import precision as prec
from ml.config import load_config as load_config_of
from ml.runs import distributed_setup, pick_device, run_dir


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


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its rank among ``world`` torchrun processes, the device, and the
    autocast dtype (None = fp32)."""

    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype | None

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, logs and writes files."""
        return self.rank == 0


def start_runtime(cfg: TrainConfig) -> Runtime:
    """Pick the device, join torchrun's process group when there is one, resolve the precision."""
    rank, world, device = distributed_setup(pick_device(cfg.device))
    return Runtime(rank, world, device, prec.resolve(cfg.precision, device))


def with_init_architecture(cfg: TrainConfig, init: dict[str, Any]) -> TrainConfig:
    """Fine-tuning keeps the pretrained architecture: ``cfg`` with the checkpoint's arch and model options."""
    options = init.get("model_options", {})
    if cfg.model != init["arch"]:
        print(f"init_from {cfg.init_from}: using its architecture {init['arch']} (model={cfg.model} ignored)")
    return dataclasses.replace(cfg, model=init["arch"], **{k: v for k, v in options.items() if hasattr(cfg, k)})


def open_run(cfg: TrainConfig, rt: Runtime) -> Path:
    """The run folder, created by rank 0 and the same on every rank, with ``config.yaml`` written."""
    out = run_dir(cfg) if rt.main else Path()
    if rt.world > 1:  # every rank reports the same run folder
        shared = [str(out)]
        dist.broadcast_object_list(shared, src=0)
        out = Path(shared[0])
    if rt.main:
        (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return out
