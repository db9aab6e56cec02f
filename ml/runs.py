"""What every training entry point shares around its loop: the device, torchrun's ranks, the run
folder, a progress bar and TensorBoard.

* `pick_device`: ``auto`` is CUDA when there is one, else the CPU.
* `distributed_setup`: (rank, world size, device) under torchrun (nccl on CUDA, gloo on the CPU).
* `run_dir`: a fresh ``<out_dir>/<YYYYmmdd-HHMMSS>-<name>/`` (a numeric suffix when two runs start
  in the same second), or the folder of the checkpoint being resumed.
* `progress`: a tqdm bar when enabled. `write_tensorboard`: a SummaryWriter in ``<run>/tb``, or None.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def distributed_setup(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) under torchrun; (0, 1, device) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def run_dir(cfg: Any) -> Path:
    if getattr(cfg, "resume", ""):
        return Path(cfg.resume).parent
    # Two runs started in the same second (a sweep, a test) must not share a folder: the second
    # gets a numeric suffix. mkdir(exist_ok=False) makes the claim atomic between processes.
    stem = Path(cfg.out_dir) / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.name}"
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = stem if attempt == 1 else stem.with_name(f"{stem.name}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a fresh run folder beside {stem}")


def eta(elapsed_s: float, done: int, total: int) -> str:
    """The time the remaining ``total - done`` epochs will take at the pace of the ``done`` so far,
    in words ("25 min", "4.6 h"): a long background run says early whether it fits its budget."""
    left = elapsed_s / max(done, 1) * max(total - done, 0)
    return f"{left / 60:.0f} min" if left < 5400 else f"{left / 3600:.1f} h"


def progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


def write_tensorboard(out: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        print("tensorboard is not installed; no TensorBoard logs")
        return None
    return SummaryWriter(log_dir=str(out / "tb"))
