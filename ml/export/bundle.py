"""Writing a bundle folder: the scripted ensemble (``model.pt``), its manifest, the precisions it
runs in, and the half-precision member files of ``--save-members``.

The module's classes are `ml.bundle_module` (Member, Ensemble); nothing scripted is defined here.
"""

from __future__ import annotations

import copy
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml import torchscript
from ml.bundle_module import build_ensemble, build_quantized_ensemble, cam_layer_of
from worker.runtime.bundle import DEFAULT_MODULE_FILE, Manifest, sha256_file, write_manifest

INT8_MODULE_FILE = "model-int8.pt"
WEIGHT_STORAGE = ("float16", "float32")  # how model.pt may store the members' weights (``--weights``)


def round_to_storage(model: nn.Module, weights: str) -> nn.Module:
    """``model`` (float32) with every floating-point parameter and buffer rounded as ``weights``
    storage keeps it: through half precision and back for "float16", unchanged for "float32"; in
    place, so that what the export measures is what the module file holds. Raises ValueError when
    a value does not fit half precision."""
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_STORAGE)}, not {weights!r}")
    if weights == "float16":
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    half = tensor.half()
                    if not bool(torch.isfinite(half).all()) and bool(torch.isfinite(tensor).all()):
                        raise ValueError(f"{name} does not fit half precision: export with --weights float32")
                    tensor.copy_(half)
    return model


def export_bundle(
    members: list[tuple[nn.Module, dict[str, Any]]],
    out_dir: str | Path,
    *,
    classes: list[str],
    name: str,
    version: str,
    metrics: dict[str, Any] | None = None,
    superclasses: dict[str, str] | None = None,
    input_size: tuple[int, int] = (32, 32),
    weights: str = "float32",
    flip_tta: bool = False,
    tta: int | None = None,
    max_tta: int | None = None,
    temperature: float = 1.0,
    temperatures: list[float] | None = None,
    command: str | None = None,
    report_dir: str | Path | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    manifest_fields: dict[str, Any] | None = None,
) -> Manifest:
    """Script the ensemble of ``members`` (model, info) and write a bundle folder.

    Each ``info`` holds at least ``mean`` and ``std`` (0-1 scale) and is recorded in the manifest's
    ``members`` list (arch, params, metrics, checkpoint ...). ``tta`` is the level (0 none, 1
    mirror, 2 mirror + one-pixel translations); ``flip_tta=True`` is level 1. ``max_tta`` (default
    ``tta``): the highest level the module carries, ``temperatures`` holding one per level up to
    it; the module runs at ``tta`` and the runtime may switch to any level up to ``max_tta``
    (``extra["tta_levels"]``). The module gets
    the ``explain`` method when every member's model has a ``cam_layer``; ``manifest_fields`` sets
    optional manifest keys (calibration, uncertain, ood). ``weights="float16"`` stores the members'
    weights in half precision (the manifest says so and `load_bundle` converts them back); round
    the members first (`round_to_storage`) for the module to compute exactly what they do.
    """
    level = (1 if flip_tta else 0) if tta is None else int(tta)
    top = level if max_tta is None else int(max_tta)
    if top < level:
        raise ValueError(f"max_tta {top} is below the module's TTA level {level}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    ensemble = build_ensemble(
        members, tta=top, temperature=temperature, temperatures=temperatures, input_size=input_size
    )
    ensemble.set_tta(level)  # its temperature too; scripting keeps the level the module runs at
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_STORAGE)}, not {weights!r}")
    stored = ensemble
    if weights == "float16":
        stored = copy.deepcopy(ensemble)  # the eager members stay float32 (explain's shapes, --int8)
        for member in stored.members:
            member.tta.model.half()
    scripted = torchscript.script(stored)
    module_path = out_dir / DEFAULT_MODULE_FILE
    scripted.save(str(module_path))
    layers = [cam_layer_of(model) for model, _ in members]
    explain = None
    if all(layers):
        size = ensemble.map_size if ensemble.map_size[0] else None
        with torch.enable_grad():
            act, _, _ = ensemble.members[0].cam_forward(torch.zeros(1, 3, *input_size, dtype=torch.uint8))
        explain = {
            "method": "explain",
            "signature": "explain(images uint8 N x 3 x H x W, class_index N x K long or None, top_k=5) -> "
            "{probs, member_probs, member_logits, ood_score, class_index, cam N x K x h x w}",
            "call": "under torch.enable_grad() and torch.jit.optimized_execution(False)",
            "algorithm": "Grad-CAM on each member's cam_layer (gradient of the member's logit for the "
            "image itself, before TTA and temperature), members' maps averaged",
            "layers": layers,
            "map_size": list(size or act.shape[2:]),
        }
    manifest = Manifest(
        name=name,
        version=version,
        classes=list(classes),
        superclasses=superclasses,
        input_size=list(input_size),
        mean=list(members[0][1]["mean"]),
        std=list(members[0][1]["std"]),
        members=[{k: v for k, v in info.items()} for _, info in members],
        metrics=metrics or {},
        sha256=sha256_file(module_path),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command or " ".join(shlex.quote(a) for a in ["python", "-m", "ml", *sys.argv[1:]]),
        # tta: the level the module runs at; tta_levels: those the runtime may switch to (set_tta)
        extra={**(extra or {}), "flip_tta": level >= 1, "tta": level, "tta_levels": list(range(top + 1))},
        explain=explain,
        precisions=module_precisions(module_path, input_size),
        weights=weights if weights != "float32" else None,
        **(manifest_fields or {}),
    )
    write_manifest(out_dir, manifest)
    if report_dir is not None:
        shutil.copytree(report_dir, out_dir / "report")
    return manifest


def export_int8(
    members: list[tuple[nn.Module, dict[str, Any]]],
    out_dir: Path,
    manifest: Manifest,
    calibration_data: Any,
    *,
    temperatures: list[float] | None = None,
    images: int | None = None,
    seed: int = 0,
) -> Manifest:
    """``--int8``: the int8 twin of the bundle's module (`ml.quantize`: each member quantised with
    the activation ranges of ``images`` training images, drawn with ``seed``, at the module's TTA
    level and temperatures, switchable to the same levels) as ``model-int8.pt``; the manifest gets its ``int8`` entry and "int8"
    among its precisions, and is rewritten. Raises RuntimeError when the written module does not
    give probabilities."""
    from ml.quantize import CALIBRATION_IMAGES, ENGINE, calibration_images

    n = images or CALIBRATION_IMAGES
    level = int(manifest.extra.get("tta", 0))
    top = max(manifest.extra.get("tta_levels") or [level])
    calibration = [calibration_images(calibration_data, info["mean"], info["std"], n, seed) for _, info in members]
    quantized = build_quantized_ensemble(
        members,
        calibration,
        tta=top,
        temperature=temperatures[top] if temperatures else 1.0,
        temperatures=temperatures,
    )
    quantized.set_tta(level)
    path = out_dir / INT8_MODULE_FILE
    torchscript.script(quantized).save(str(path))
    with torch.inference_mode():
        probs = torch.jit.load(str(path)).eval()(torch.zeros(2, 3, *manifest.input_size, dtype=torch.uint8))
    if not (bool(torch.isfinite(probs).all()) and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-3)):
        raise RuntimeError(f"the int8 module {path} does not give probabilities")
    manifest.int8 = {
        "module_file": INT8_MODULE_FILE,
        "sha256": sha256_file(path),
        "engine": ENGINE,
        "method": "post-training static quantisation (torch.ao FX): int8 weights per output channel, "
        "uint8 activations per tensor, GELU on int8; layers kept in float: "
        + (", ".join(sorted({n for m, _ in members for n in getattr(m, "int8_float_layers", ())})) or "none"),
        "calibration": {"images": len(calibration[0]), "split": "train", "seed": seed},
    }
    manifest.precisions = [*(manifest.precisions or ["fp32"]), "int8"]
    write_manifest(out_dir, manifest)
    return manifest


def module_precisions(module_path: Path, input_size: tuple[int, int]) -> list[str]:
    """The precisions the saved module runs in: fp32, and bf16 when a copy converted to bfloat16
    (as `worker.runtime.bundle.load_bundle` converts it) returns finite float32 probabilities."""
    converted = torch.jit.load(str(module_path)).eval()
    converted.to(torch.bfloat16)
    try:
        with torch.inference_mode():
            probs = converted(torch.zeros(2, 3, *input_size, dtype=torch.uint8))
    except RuntimeError:
        return ["fp32"]
    return ["fp32", "bf16"] if probs.dtype == torch.float32 and bool(torch.isfinite(probs).all()) else ["fp32"]


def save_member(path: str | Path, model: nn.Module, ckpt: dict[str, Any], metrics_csv: str | None = None) -> Path:
    """One member's checkpoint for ``<bundle>/members/``: the weights in half precision and what
    export needs to rebuild it (arch, options, classes, mean/std, metrics, config, data); no
    optimiser state. ``ml.checkpoint.load_model`` reads it back in float32."""
    from ml.checkpoint import save_checkpoint

    state = {k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}
    payload = {
        key: ckpt[key]
        for key in ("arch", "model_options", "classes", "superclasses", "mean", "std", "metrics", "config", "data")
        if key in ckpt
    }
    if "epoch" in ckpt:
        payload["epoch"] = ckpt["epoch"]
    payload["state_dict"] = state
    payload["storage"] = "float16"
    if metrics_csv:
        payload["metrics_csv"] = metrics_csv  # the training curves survive re-exports from members/
    save_checkpoint(path, payload)
    return Path(path)


def save_members(
    out: Path, loaded: list[tuple[str, nn.Module, dict[str, Any], str | None]], manifest: Manifest
) -> None:
    """``--save-members``: each member's file under ``<bundle>/members/`` (numbered, arch and seed in
    the name, and ``-distilled`` for a net trained with a teacher, so it is not taken for the plain
    run of the same seed), its path recorded in the manifest's member entry, and the manifest rewritten."""
    (out / "members").mkdir()
    for i, ((_, model, ckpt, csv_text), info) in enumerate(zip(loaded, manifest.members, strict=True)):
        seed = info.get("seed")
        name = f"{i + 1:02d}-{ckpt['arch']}{'' if seed is None else f'-seed{seed}'}"
        if (ckpt.get("config") or {}).get("teacher"):
            name += "-distilled"
        file = out / "members" / f"{name}.pt"
        save_member(file, model, ckpt, csv_text)
        info["member_file"] = str(file.relative_to(out))
    write_manifest(out, manifest)
