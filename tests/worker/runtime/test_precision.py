"""Inference precision (worker.runtime.precision): the rules of auto, bf16 bundles against fp32, and
what a bundle that cannot run in bf16 does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.runtime import precision as prec
from worker.runtime.bundle import BundleError, load_bundle
from worker.runtime.predictor import Predictor


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))


def test_resolve_rules(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert prec.resolve("fp32", cpu) == torch.float32 and prec.resolve("fp32", cuda) == torch.float32
    assert prec.resolve("bf16", cpu) == torch.bfloat16
    assert prec.resolve("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(prec, "cpu_bf16_speedup", lambda: 0.0)
    assert prec.resolve("auto", cpu) == torch.float32  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(prec, "cpu_bf16_speedup", lambda: 0.52)  # native, but measured slower
    assert prec.resolve("auto", cpu) == torch.float32
    assert prec.resolve("bf16", cpu) == torch.bfloat16  # forcing it still works
    monkeypatch.setattr(prec, "cpu_bf16_speedup", lambda: 2.0)
    assert prec.resolve("auto", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        prec.resolve("fp16", cpu)


def test_the_bf16_speedup_is_measured_on_one_thread_where_the_cpu_has_bf16(monkeypatch) -> None:
    prec.cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: False)
    assert prec.cpu_bf16_speedup() == 0.0 and not prec.cpu_bf16_pays()  # nothing timed: emulated bf16
    prec.cpu_bf16_speedup.cache_clear()
    monkeypatch.undo()
    if not prec.cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    threads = torch.get_num_threads()
    speedup = prec.cpu_bf16_speedup()
    assert 0.05 < speedup < 100  # a ratio of two real timings
    assert torch.get_num_threads() == threads  # the probe ran on one thread and gave the others back
    assert prec.cpu_bf16_pays() == (speedup >= prec.BF16_MIN_SPEEDUP)
    assert prec.cpu_bf16_speedup() == speedup  # measured once per process


def test_environment_setting(monkeypatch) -> None:
    monkeypatch.delenv(prec.PRECISION_ENV, raising=False)
    assert prec.from_env() == "auto"
    monkeypatch.setenv(prec.PRECISION_ENV, " FP32 ")
    assert prec.from_env() == "fp32"
    monkeypatch.setenv(prec.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="WORKER_PRECISION must be one of"):
        prec.from_env()


def test_exported_bundle_runs_in_bf16_close_to_fp32(tiny_bundle: Path) -> None:
    fp32 = load_bundle(tiny_bundle, precision="fp32")
    bf16 = load_bundle(tiny_bundle, precision="bf16")
    assert fp32.manifest.precisions == ["fp32", "bf16"]
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert next(bf16.module.parameters()).dtype == torch.bfloat16
    x = images(16)
    a, b = fp32.predict(x), bf16.predict(x)
    assert b.dtype == torch.float32 and torch.allclose(b.sum(1), torch.ones(16), atol=1e-5)
    assert not torch.equal(a, b)  # it really ran in bf16
    torch.testing.assert_close(b, a, atol=2e-2, rtol=0)


def test_explain_runs_in_bf16(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle, precision="bf16")
    with torch.enable_grad(), torch.jit.optimized_execution(False):
        out = bundle.module.explain(images(2), None, 3)
    assert out["cam"].dtype == torch.float32 and out["cam"].shape[:2] == (2, 3)
    assert bool(torch.isfinite(out["cam"]).all()) and bool((out["cam"] >= 0).all())
    assert out["probs"].dtype == torch.float32


def test_a_bundle_without_bf16_runs_in_fp32_and_refuses_bf16(tiny_bundle: Path, tmp_path: Path) -> None:
    old = Path(shutil.copytree(tiny_bundle, tmp_path / "old"))
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["precisions"]  # as written before the module cast its input to its weights' dtype
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(old, precision="auto").precision == "fp32"
    with pytest.raises(BundleError, match="runs in fp32 only, not bf16: re-export it"):
        load_bundle(old, precision="bf16")


def test_predictor_takes_the_environment_precision(tiny_bundle: Path, monkeypatch) -> None:
    monkeypatch.setenv(prec.PRECISION_ENV, "fp32")
    assert Predictor(tiny_bundle, device="cpu").load().precision == "fp32"
    monkeypatch.setenv(prec.PRECISION_ENV, "bf16")
    assert Predictor(tiny_bundle, device="cpu").load().precision == "bf16"
    assert Predictor(tiny_bundle, device="cpu", precision="fp32").load().precision == "fp32"  # argument wins
