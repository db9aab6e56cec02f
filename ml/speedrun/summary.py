"""The multi-seed summary of ``python -m ml speedrun``: mean ± std over seeds of the final
validation accuracy, training time and throughput, and of the time to each target accuracy."""

from __future__ import annotations

import dataclasses
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from ml import precision as prec
from ml.bench import device_name


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def summarise(cfg: Any, results: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """The seeds' results (``train_one``'s dicts) with the hardware, software and config they ran on."""
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


def print_summary(cfg: Any, summary: dict[str, Any], written: Path) -> None:
    print(f"\nspeedrun {cfg.name}: {len(summary['runs'])} seed(s) on {summary['hardware']}, {summary['precision']}")
    print(f"  final validation accuracy (TTA {cfg.tta}): {summary['final_val_acc']}")
    print(f"  training time: {summary['train_s']} s at {summary['images_per_s']} images/s")
    for t, v in summary["time_to"].items():
        print(f"  time to {float(t):.0%}: {v['train_s']} s (reached by {v['reached']})")
    print(f"  written: {written}")
