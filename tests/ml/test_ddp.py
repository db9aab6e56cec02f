"""Multi-process training through torchrun: two gloo processes on the CPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ml.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 33 s on 2 busy cores: three Python processes import torch
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_two_gloo_processes_train_and_write_one_checkpoint(shared_image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ML_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "tests" / "ml" / "ddp_probe.py"),  # python -m ml train, then checks nothing holds the process group
        f"data={shared_image_folder}",
        f"out_dir={out}",
        "val_per_class=2",
        "epochs=2",
        "batch_size=16",
        "width=0.25",
        "progress=false",
        "threads=1",
        "device=cpu",
        "name=ddp",
    ]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 ranks" in proc.stdout
    assert proc.stdout.count("done: ") == 1  # only rank 0 prints

    runs = list(out.iterdir())
    assert len(runs) == 1  # one run folder, not one per rank
    run = runs[0]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "checkpoint.pt"]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["state_dict"])
    # both ranks' shards are counted: 72 training images an epoch, not 36
    for row in rows:
        assert float(row["images_per_s"]) * float(row["epoch_s"]) == pytest.approx(72)
