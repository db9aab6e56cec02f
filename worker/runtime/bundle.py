"""The model bundle: the one contract between `ml/` (which writes it) and the worker (which loads it).

A bundle is a folder::

    <bundle>/
        manifest.json   # Manifest (worker/runtime/manifest.py), as JSON
        model.pt        # TorchScript module (file name given by manifest["module_file"])
        report/         # optional: report.json, confusion matrix and other PNGs, ablations.md

The TorchScript module takes a ``uint8`` tensor of shape ``N x 3 x H x W`` (RGB, H x W =
``input_size``) and returns ``float32`` class probabilities of shape ``N x C`` (C = len(classes)).
Normalisation, the ensemble average and any test-time augmentation happen inside the module, so
the worker only decodes and resizes images.

``load_bundle(..., precision="auto")`` runs the module in bf16 where the hardware does bf16 and the
manifest lists it among ``precisions`` (`worker.runtime.precision`); fp32 otherwise.
``precision="int8"`` runs the bundle's int8 twin instead (the manifest's ``int8`` entry names the
file and its SHA-256; CPU only); the float module is loaded beside it for what needs gradients
(``LoadedBundle.explainer``: Grad-CAM).

A module may store its members' weights in half precision (the manifest's ``weights``:
"float16", which `python -m ml export` writes: half the file); `load_bundle` converts them to the
dtype the module runs in, fp32 or bf16, before the first call.

The manifest's ``sha256`` is the SHA-256 of the module file; `load_bundle` refuses a bundle whose
module does not match it. This module imports no Django, so `ml/`, benchmarks and tests use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from worker.runtime import precision as prec

# Re-exported: the manifest lives in a torch-free module so the web app can read it.
from worker.runtime.manifest import (  # noqa: F401
    DEFAULT_MODULE_FILE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleError,
    Manifest,
    read_manifest,
    sha256_file,
    write_manifest,
)


@dataclass
class LoadedBundle:
    path: Path
    manifest: Manifest
    module: torch.jit.ScriptModule
    device: torch.device
    dtype: torch.dtype = torch.float32  # what the module's weights were converted to
    tta: int | None = None  # the TTA level the module runs at (None: the bundle does not say)
    float_module: torch.jit.ScriptModule | None = None  # with an int8 module: the float one, for explain

    @property
    def explainer(self) -> torch.jit.ScriptModule:
        """The module whose ``explain`` to call: the float one beside an int8 module, else ``module``."""
        return self.float_module if self.float_module is not None else self.module

    @property
    def precision(self) -> str:
        return prec.name(self.dtype)

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float32 N x C probabilities (on the CPU)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
        return self.module(images.to(self.device)).float().cpu()


def load_bundle(
    bundle_dir: str | Path, device: str | torch.device = "cpu", precision: str = "auto", tta: int | None = None
) -> LoadedBundle:
    """Read the manifest, check the module's checksum, and load the TorchScript module.

    ``precision`` (auto | bf16 | fp32 | int8, `worker.runtime.precision`): a bundle whose manifest
    lists bf16 among its ``precisions`` runs in bf16 when that resolves to bf16 on ``device``; any
    other bundle runs in fp32 (asking such a bundle for bf16 explicitly is an error). int8 loads the
    manifest's int8 module (refused when the bundle has none, or off the CPU), with the float module
    (as ``auto``) beside it for explanations. ``tta`` switches the module to a lower
    test-time-augmentation level among the manifest's ``extra["tta_levels"]`` (``set_tta``: fewer
    views, more images/s, each level with its own temperature); None keeps the exported level."""
    prec.check(precision)
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"model bundle {bundle_dir} does not exist or is not a folder")
    manifest = read_manifest(bundle_dir)
    device = torch.device(device)
    if precision == "int8":
        return _load_int8(bundle_dir, manifest, device, tta)
    module = _load_module(bundle_dir, manifest.module_file, manifest.sha256, device)
    supported = manifest.precisions or ["fp32"]
    dtype = prec.resolve(precision, device)
    if prec.name(dtype) not in supported:
        if precision != "auto":
            raise BundleError(
                f"model bundle {bundle_dir} runs in {', '.join(supported)} only, not {precision}: "
                "re-export it with this version of `python -m ml export`, or ask for precision fp32"
            )
        dtype = torch.float32
    if dtype != torch.float32 or manifest.weights == "float16":
        module.to(dtype)  # half-precision storage (the manifest's ``weights``) runs in float32 or bf16
    # The module feeds its convolutions channels_last input (ml.bundle_module), but TorchScript
    # loads the weights in the default layout, so every call reordered each weight first. In the
    # same layout as the input: one image through the default bundle in fp32 on 1 thread took a
    # median 64-74 ms before, 33-35 ms after (2-core AMD EPYC, AVX2; batches of 8 and 16 unchanged).
    module.to(memory_format=torch.channels_last)
    level = _set_tta(module, bundle_dir, manifest, tta)
    return LoadedBundle(path=bundle_dir, manifest=manifest, module=module, device=device, dtype=dtype, tta=level)


def _load_module(bundle_dir: Path, file: str, sha256: str, device: torch.device) -> torch.jit.ScriptModule:
    """One of the bundle's TorchScript files, its checksum checked, in eval mode on ``device``."""
    module_path = bundle_dir / file
    if not module_path.is_file():
        raise BundleError(f"model bundle {bundle_dir} has no module file {file}")
    actual = sha256_file(module_path)
    if actual != sha256:
        raise BundleError(f"checksum mismatch for {module_path}: manifest says {sha256}, file is {actual}")
    try:
        module = torch.jit.load(str(module_path), map_location=device)
    except RuntimeError as exc:
        raise BundleError(f"cannot load the TorchScript module {module_path}: {exc}") from exc
    return module.eval()


def _set_tta(module: torch.jit.ScriptModule, bundle_dir: Path, manifest: Manifest, tta: int | None) -> int | None:
    """Switch ``module`` to TTA level ``tta`` (None: keep the exported one); the level it runs at."""
    level = manifest.extra.get("tta")
    if tta is not None and tta != level:
        levels = manifest.extra.get("tta_levels") or []
        if tta not in levels or not hasattr(module, "set_tta"):
            raise BundleError(
                f"model bundle {bundle_dir} runs at TTA level {level} and can switch to "
                f"{', '.join(map(str, levels)) or 'no other level'}, not {tta}"
            )
        module.set_tta(int(tta))
        level = tta
    return level


def _load_int8(bundle_dir: Path, manifest: Manifest, device: torch.device, tta: int | None) -> LoadedBundle:
    """The int8 module of ``precision="int8"``, with the float module (``auto``) beside it."""
    if device.type != "cpu":
        raise BundleError(f"precision int8 runs on the CPU only, not on {device.type}: ask for auto, bf16 or fp32")
    entry = manifest.int8 or {}
    if not entry.get("module_file") or not entry.get("sha256"):
        raise BundleError(
            f"model bundle {bundle_dir} has no int8 module: re-export it with `python -m ml export ... --int8`, "
            "or ask for precision auto, bf16 or fp32"
        )
    engine = entry.get("engine", "x86")
    if engine not in torch.backends.quantized.supported_engines:
        raise BundleError(
            f"the int8 module of {bundle_dir} needs the {engine!r} quantisation engine, which this torch build "
            f"lacks (it has {', '.join(torch.backends.quantized.supported_engines) or 'none'}): ask for precision auto"
        )
    torch.backends.quantized.engine = engine
    module = _load_module(bundle_dir, entry["module_file"], entry["sha256"], device)
    level = _set_tta(module, bundle_dir, manifest, tta)
    float_bundle = load_bundle(bundle_dir, device, "auto", tta)
    return LoadedBundle(
        path=bundle_dir,
        manifest=manifest,
        module=module,
        device=device,
        dtype=torch.qint8,
        tta=level,
        float_module=float_bundle.module,
    )
