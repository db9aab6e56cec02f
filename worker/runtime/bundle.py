"""The model bundle: the one contract between `ml/` (which writes it) and the worker (which loads it).

A bundle is a folder::

    <bundle>/
        manifest.json   # Manifest below, as JSON
        model.pt        # TorchScript module (file name given by manifest["module_file"])
        report/         # optional: report.json, confusion matrix and other PNGs, ablations.md

The TorchScript module takes a ``uint8`` tensor of shape ``N x 3 x H x W`` (RGB, H x W =
``input_size``) and returns ``float32`` class probabilities of shape ``N x C`` (C = len(classes)).
Normalisation, the ensemble average and any test-time augmentation happen inside the module, so
the worker only decodes and resizes images.

The manifest's ``sha256`` is the SHA-256 of the module file; `load_bundle` refuses a bundle whose
module does not match it. This module imports no Django, so `ml/`, benchmarks and tests use it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_MODULE_FILE = "model.pt"


class BundleError(Exception):
    """A bundle that cannot be used: missing files, a bad manifest or a checksum mismatch."""


@dataclass
class Manifest:
    name: str  # short identifier, e.g. "cifar10-resnet-ensemble"
    version: str  # recorded with every prediction, e.g. "cifar10-resnet20-2026.11.22"
    classes: list[str]
    input_size: list[int]  # [H, W]
    mean: list[float]  # per-channel, 0-1 scale; applied inside the module
    std: list[float]
    members: list[dict[str, Any]]  # one entry per ensemble member: arch, params, metrics, ...
    metrics: dict[str, Any]  # validation metrics of the whole bundle
    sha256: str  # of the module file
    created_at: str  # ISO 8601, UTC
    command: str  # the command that produced the bundle
    superclasses: dict[str, str] | None = None  # class -> superclass, e.g. CIFAR-100 coarse labels
    module_file: str = DEFAULT_MODULE_FILE
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
        ]
        if missing:
            raise BundleError(f"manifest is missing required keys: {', '.join(missing)}")
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise BundleError(
                f"manifest format_version {data.get('format_version')} is not supported "
                f"(this code reads version {FORMAT_VERSION})"
            )
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        if not manifest.classes:
            raise BundleError("manifest lists no classes")
        if len(manifest.input_size) != 2:
            raise BundleError(f"manifest input_size must be [H, W], got {manifest.input_size}")
        return manifest

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle_dir: str | Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"no {MANIFEST_NAME} in model bundle {bundle_dir}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object, not {type(data).__name__}")
    try:
        return Manifest.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path} is not a valid manifest: {exc}") from exc


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


@dataclass
class LoadedBundle:
    path: Path
    manifest: Manifest
    module: torch.jit.ScriptModule
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float32 N x C probabilities (on the CPU)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
        return self.module(images.to(self.device)).float().cpu()


def load_bundle(bundle_dir: str | Path, device: str | torch.device = "cpu") -> LoadedBundle:
    """Read the manifest, check the module's checksum, and load the TorchScript module."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"model bundle {bundle_dir} does not exist or is not a folder")
    manifest = read_manifest(bundle_dir)
    module_path = bundle_dir / manifest.module_file
    if not module_path.is_file():
        raise BundleError(f"model bundle {bundle_dir} has no module file {manifest.module_file}")
    actual = sha256_file(module_path)
    if actual != manifest.sha256:
        raise BundleError(f"checksum mismatch for {module_path}: manifest says {manifest.sha256}, file is {actual}")
    device = torch.device(device)
    try:
        module = torch.jit.load(str(module_path), map_location=device)
    except RuntimeError as exc:
        raise BundleError(f"cannot load the TorchScript module {module_path}: {exc}") from exc
    module.eval()
    return LoadedBundle(path=bundle_dir, manifest=manifest, module=module, device=device)
