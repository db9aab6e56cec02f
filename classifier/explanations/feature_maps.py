"""Staff only: the activations of the bundle's first member for one image, as channel grids."""

from __future__ import annotations

from typing import Any

from classifier.models import Classification


def feature_maps(classification: Classification, bundle_dir: str, n: int = 16) -> dict[str, Any]:
    """The activations of the first and a middle stage of the bundle's first member for this
    image, as grids of the ``n`` most active channels (PNG bytes). Runs the member's eager model
    from ``<bundle>/members/`` (torch is imported here only, on a staff request). Returns
    ``{"member", "stages": [{"layer", "shape", "channels", "png"}]}`` or ``{"error": message}``."""
    from pathlib import Path

    from worker.runtime.images import ImageRejected, decode_for_model
    from worker.runtime.manifest import BundleError, read_manifest
    from worker.runtime.pictures import channel_grid

    try:
        manifest = read_manifest(bundle_dir)
    except BundleError as exc:
        return {"error": str(exc)}
    member = next((m for m in manifest.members if m.get("member_file")), None)
    if member is None:
        return {"error": "The bundle in use has no member checkpoints (members/, ml export --save-members)."}
    import torch

    from ml.checkpoint import load_model

    model, ckpt = load_model(Path(bundle_dir) / member["member_file"])
    layers = getattr(model, "feature_layers", None)
    if not layers:
        return {"error": f"{ckpt['arch']} names no feature layers."}
    try:
        with classification.image.open("rb") as f:
            image = decode_for_model(f.read(), tuple(manifest.input_size))
    except (OSError, ImageRejected) as exc:
        return {"error": f"The image could not be read: {exc}"}
    mean = torch.tensor(ckpt["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ckpt["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(image)[None].float() / 255.0 - mean) / std
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()))
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    stages = []
    for name in layers:
        act = seen[name][0].float().numpy()
        png, channels = channel_grid(act, n=n)
        stages.append({"layer": name, "shape": list(act.shape), "channels": channels, "png": png})
    return {
        "member": f"{member.get('arch', '?')} ({member['member_file']})",
        "version": manifest.version,
        "stages": stages,
    }
