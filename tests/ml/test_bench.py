"""ml.bench runs (a smoke test: numbers are printed, never asserted against a clock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.bench import main
from ml.models import build_model, count_parameters


def test_bench_smoke(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    main(["model=resnet20", "width=0.25", "batch_size=8", "steps=2", "warmup=1", "device=cpu", f"json={out}"])
    printed = capsys.readouterr().out
    assert "images/s" in printed and "s per epoch of 45,000 images" in printed
    result = json.loads(out.read_text())
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0
    assert result["epoch_s"] == pytest.approx(45_000 / result["train_images_per_s"])
    assert result["params"] == count_parameters(build_model("resnet20", width=0.25))


def test_bench_refuses_unknown_keys(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["stepz=2"])
    assert "unknown config key 'stepz'" in capsys.readouterr().err
