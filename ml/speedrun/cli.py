"""``python -m ml speedrun``: the config, one run per seed on the same split, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ml import precision as prec
from ml.config import config_from_argv
from ml.runs import pick_device
from ml.speedrun.config import SpeedrunConfig
from ml.speedrun.run import load_split, train_one
from ml.speedrun.summary import print_summary, summarise


def main(argv: list[str]) -> None:
    import ml.speedrun  # the package's docstring is the command's manual

    cfg = config_from_argv(
        argv,
        SpeedrunConfig,
        "python -m ml speedrun",
        ml.speedrun.__doc__,
        check=lambda c: prec.resolve(c.precision, torch.device("cpu")),  # a bad precision fails before any run
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    data, train_idx, val_idx = load_split(cfg)
    seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    results = [train_one(cfg, seed, data, train_idx, val_idx) for seed in seeds]
    summary = summarise(cfg, results, device)
    out = Path(cfg.out_dir) / f"speedrun-{cfg.name}.json"
    out.write_text(json.dumps(summary, indent=2))
    print_summary(cfg, summary, out)
