"""python -m benchmarks.batch_cost: one row per (threads, batch), each with the model's CPU and wall
time per image, measured on the bundle the worker would run."""

from __future__ import annotations

import re

import pytest

from benchmarks import batch_cost


def test_it_prints_a_row_per_thread_count_and_batch_size(tiny_bundle, capsys) -> None:
    assert (
        batch_cost.main(["--bundle", str(tiny_bundle), "--threads", "1", "--batches", "1", "3", "--images", "6"]) == 0
    )
    out = capsys.readouterr().out
    assert "bundle tiny-test-0" in out
    rows = re.findall(r"^\s+1\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, flags=re.M)
    assert [int(batch) for batch, *_ in rows] == [1, 3]
    assert all(float(cpu) > 0 and float(wall) > 0 and float(rate) > 0 for _, cpu, wall, rate in rows)


def test_it_refuses_nonsense(capsys) -> None:
    with pytest.raises(SystemExit):
        batch_cost.main(["--batches", "0"])
    assert "must be positive" in capsys.readouterr().err


def test_measure_counts_every_image(tiny_bundle) -> None:
    from worker.runtime.predictor import Predictor

    predictor = Predictor(str(tiny_bundle), device="cpu")
    predictor.load()
    calls = []
    real = predictor.predict_probs
    predictor.predict_probs = lambda x: calls.append(len(x)) or real(x)
    batch_cost.measure(predictor, batch=4, images=10, warm_up=1)
    assert calls == [4] + [4, 4, 4]  # one warm-up pass, then ceil(10 / 4) = 3 measured passes
