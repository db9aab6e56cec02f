"""The benchmarks find the shared data set beside the checkout, wherever the checkout is."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def import_copy(tmp_path: Path, name: str):
    """benchmarks/<name>.py copied into tmp_path/checkout/benchmarks/ and imported from there."""
    folder = tmp_path / "checkout" / "benchmarks"
    folder.mkdir(parents=True)
    shutil.copy(BENCHMARKS / f"{name}.py", folder / f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"copied_benchmarks_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_benchmark_clients_default_to_the_shared_folder_beside_the_checkout(tmp_path: Path) -> None:
    client = import_copy(tmp_path, "client")
    assert client.DEFAULT_IMAGES == tmp_path / "shared" / "datasets" / "cifar10-jpeg" / "train"


def test_load_and_realtime_send_the_clients_default_images() -> None:
    import benchmarks.client
    import benchmarks.load
    import benchmarks.realtime.__main__ as realtime

    assert benchmarks.load.build_parser().parse_args([]).images == benchmarks.client.DEFAULT_IMAGES
    assert realtime.DEFAULT_IMAGES is benchmarks.client.DEFAULT_IMAGES


def test_runtime_benchmark_reads_the_clients_default_images() -> None:
    pytest.importorskip("torch")
    import benchmarks.client
    import benchmarks.runtime.inputs

    assert benchmarks.runtime.inputs.DEFAULT_IMAGES is benchmarks.client.DEFAULT_IMAGES
