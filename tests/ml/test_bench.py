"""ml.bench runs (a smoke test: numbers are printed, never asserted against a clock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ml import precision as prec
from ml.bench import main
from ml.models import build_model, count_parameters


def test_bench_smoke(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    main(["model=resnet20", "width=0.25", "batch_size=8", "steps=2", "warmup=1", "device=cpu", f"json={out}"])
    printed = capsys.readouterr().out
    assert "train img/s" in printed and "epoch = 45,000 images" in printed
    fp32, bf16 = json.loads(out.read_text())  # both precisions, one after the other, in one run
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    for result in (fp32, bf16):
        assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0
        assert result["epoch_s"] == pytest.approx(45_000 / result["train_images_per_s"])
        assert result["params"] == count_parameters(build_model("resnet20", width=0.25))
    lines = [line.split()[0] for line in printed.splitlines() if line.startswith(("fp32", "bf16"))]
    assert lines == ["fp32", "bf16"]
    auto = prec.name(prec.resolve("auto", torch.device("cpu")))
    assert f"precision=auto here: {auto} (" in printed  # what auto takes on this CPU, and why


def test_bench_one_precision(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    main(["model=fastnet", "width=0.125", "batch_size=4", "steps=1", "warmup=1", "precisions=fp32", f"json={out}"])
    (result,) = json.loads(out.read_text())
    assert result["precision"] == "fp32" and result["model"] == "fastnet"


def test_bench_refuses_unknown_keys(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["stepz=2"])
    assert "unknown config key 'stepz'" in capsys.readouterr().err
