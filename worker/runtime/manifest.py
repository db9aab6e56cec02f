"""The bundle's manifest (manifest.json): reading, writing and checking it, without torch.

Split from `worker.runtime.bundle` so that the web side (the admin's model-bundle page and the
evaluation-report import) can read a manifest without importing torch; `bundle` re-exports
everything here. Imports no Django and no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    # Optional (absent in older bundles; the worker then skips what needs them):
    explain: dict[str, Any] | None = None  # the module's explain method: layers, map_size, algorithm
    calibration: dict[str, Any] | None = None  # temperature (applied inside the module), ECE/NLL before/after
    uncertain: dict[str, Any] | None = None  # threshold on the top probability, and what it means
    ood: dict[str, Any] | None = None  # threshold on the module's ood_score, AUROC, share flagged
    # the prediction sets (ml.conformal): every class whose calibrated probability is >= threshold, fitted
    # for a coverage; absent = no sets
    prediction_set: dict[str, Any] | None = None
    # the dtypes the module runs in once converted (worker.runtime.precision): "fp32", "bf16";
    # absent = fp32 only (a module that does not cast its input to its weights' dtype)
    precisions: list[str] | None = None
    # how the module file stores its members' weights: "float16" (half the size; the loader converts
    # them to the dtype the module runs in before the first call, `worker.runtime.bundle.load_bundle`);
    # absent = float32, as the module runs
    weights: str | None = None
    # the int8 twin of the module (`ml.quantize`, ``python -m ml export --int8``): module_file,
    # sha256, engine, calibration; absent = no int8 (precision int8 is then refused)
    int8: dict[str, Any] | None = None

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


def set_thresholds(entry: dict[str, Any] | None, num_classes: int) -> list[float] | None:
    """A manifest's prediction-set thresholds, one per class (``thresholds``; or the marginal
    ``threshold`` for every class); None when the bundle has none or they do not fit its classes."""
    values = (entry or {}).get("thresholds")
    if isinstance(values, list) and len(values) == num_classes and all(isinstance(v, int | float) for v in values):
        return [float(v) for v in values]
    single = (entry or {}).get("threshold")
    return [float(single)] * num_classes if isinstance(single, int | float) else None


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
