"""The configuration of ``python -m ml speedrun``: one dataclass, set from YAML and key=value
overrides (`ml.config`). `ml.speedrun.run` trains one seed with it; `ml.speedrun.recipe` reads the
recipe's settings from it."""

from __future__ import annotations

from dataclasses import dataclass


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
    widths: str = ""  # the three groups' channels, comma-separated (e.g. 128,384,384); overrides width
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
    # distillation (ml.speedrun.distill): teacher checkpoints, comma-separated, or a folder of them
    teacher: str = ""
    distill_alpha: float = 0.8  # weight of the teacher's term; 1 - alpha on the labels
    distill_temperature: float = 4.0
    # augmentation
    flip: bool = True  # alternating flip
    translate: int = 2  # random translation in pixels; 0 = off
    cutout: int = 0  # zero a random square of this many pixels per image (longer runs); 0 = off
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) weight, one per batch; 0 = off
    # evaluation
    tta: int = 2  # 0 none | 1 mirror | 2 mirror + translate
    eval_every: int = 1  # evaluate every N epochs (and always at the end)
    targets: str = "0.93,0.94"  # validation accuracies to time
    # runtime
    precision: str = "auto"  # auto | bf16 | fp32
    device: str = "auto"
    threads: int = 0
    progress: bool = False
