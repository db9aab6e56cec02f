"""Export one or more trained models as the model bundle the worker loads (worker/runtime/bundle.py).

    python -m ml export runs/<run>/best.pt [more checkpoints ...] --out bundles/<name>
    python -m ml export runs/<a>/best.pt runs/<b>/best.pt runs/<c>/best.pt --out bundles/default \
        --tta 2 --save-members --overwrite
    python -m ml export bundles/default/members/*.pt --out bundles/default --tta 2 --save-members --overwrite

The TorchScript module takes uint8 N x 3 x H x W RGB and returns N x C probabilities: it
normalises with each member's own mean and std, runs the members with test-time augmentation
(``--tta 0|1|2``: none, mirror, mirror + one-pixel translations, `ml.tta`; ``--flip-tta`` is
``--tta 1``) averaging their logits, divides them by the temperature, softmaxes, and averages the
members' probabilities. Two more exported methods: ``scores(images)`` (probabilities, per-member
probabilities and logits, ``ood_score``) and ``explain(images, class_index=None, top_k=5)``
(the same plus Grad-CAM maps of each member's ``cam_layer``, members' maps averaged); the
worker calls ``explain`` when the module has it (worker/runtime/explain.py).

Calibration and thresholds (unless ``--no-report``): the validation images (the checkpoints'
held-out split; ``--data``/``--split`` to change) are split in two seeded, stratified halves
(``--calibration-seed``). On the fit half the command fits the temperature (minimum NLL of the
ensemble), chooses the ``uncertain`` threshold on the calibrated top probability (the smallest at
which the answers kept are ``--uncertain-accuracy`` right) and the OOD threshold on ``ood_score``
(flags at most ``--ood-max-flagged`` of the validation images); on the report half it measures
ECE and NLL before and after, the share flagged and the accuracy above and below the threshold,
and the AUROC of ``ood_score`` against generated non-CIFAR images (`ml.ood.generate`). The
manifest stores ``calibration``, ``uncertain``, ``ood`` and ``explain``; ``report/`` gets
calibration.md, calibration.json, reliability_uncalibrated.png, reliability_calibrated.png and
ood_scores.png beside the evaluation of the whole validation split (report.json, report.md,
figures; headline metrics also in the manifest). The manifest's ``command`` is this command line.

``--save-members`` writes each member's weights in half precision (with arch, options, classes,
mean/std, metrics, config and its metrics.csv; no optimiser) to ``<bundle>/members/*.pt`` in
the `ml.checkpoint` format; those files are valid input, so a bundle can be re-exported (other
TTA, new methods, another calibration) without training. A re-export keeps report/TRAINING.md.

Measured on the 2-core CPU dev machine (shared with a training job): one ResNet-20 checkpoint, export plus
report on 5,000 validation images, 60 s wall, 22 s CPU; the bundle's accuracy equals the checkpoint's
recorded val_acc (56.30% at epoch 3).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.tta import TestTimeAugment
from worker.runtime.bundle import DEFAULT_MODULE_FILE, Manifest, sha256_file, write_manifest


class Member(nn.Module):
    """One model with its normalisation and test-time augmentation: uint8 images -> probabilities.

    The logits are TTA-averaged (``ml.tta.TestTimeAugment``, level 0/1/2), divided by the
    (bundle-wide) temperature and softmaxed."""

    def __init__(
        self,
        model: nn.Module,
        mean: list[float],
        std: list[float],
        tta: int = 0,
        temperature: float = 1.0,
        temperatures: list[float] | None = None,
    ):
        super().__init__()
        self.tta = TestTimeAugment(model, tta)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        # one temperature per TTA level 0..tta (each level's logits have their own scale); the
        # one in use is that of the current level (`set_tta`)
        levels = [float(temperature)] * (tta + 1) if temperatures is None else [float(t) for t in temperatures]
        if len(levels) != tta + 1:
            raise ValueError(f"need {tta + 1} temperatures (TTA levels 0..{tta}), got {len(levels)}")
        self.register_buffer("temperatures", torch.tensor(levels, dtype=torch.float32))
        self.register_buffer("temperature", torch.tensor(levels[tta], dtype=torch.float32))

    @torch.jit.export
    def set_tta(self, level: int) -> None:
        """Switch to TTA level ``level`` (0 .. the exported level) and its temperature."""
        if level < 0 or level >= self.temperatures.shape[0]:
            raise ValueError("TTA level out of range for this bundle")
        self.tta.level = level
        self.temperature = self.temperatures[level].clone()

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised, in the weights' dtype (float32, or bfloat16 once the runtime has
        converted the module: `worker.runtime.precision`), channels_last for oneDNN."""
        x = (images.float() - self.mean.float()) / self.std.float()
        return x.to(self.mean.dtype).contiguous(memory_format=torch.channels_last)

    @torch.jit.export
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """TTA-averaged logits, before the temperature."""
        return self.tta(self.normalise(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(images) / self.temperature.float(), dim=1)

    @torch.jit.export
    def cam_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(activation of the model's cam_layer, logits of the image itself, TTA-averaged logits);
        needs gradients enabled: the first two carry the graph that Grad-CAM differentiates."""
        x = self.normalise(images).detach().requires_grad_()
        act, first = self.tta.model.cam_forward(x)
        with torch.no_grad():
            averaged = self.tta.with_first(x.detach(), first.detach())
        return act, first.float(), averaged.float()


class Ensemble(nn.Module):
    """Average of the members' probabilities. ``forward`` is the bundle contract (uint8 in,
    probabilities out); ``scores`` and ``explain`` are the exported extras the worker may call."""

    def __init__(self, members: list[Member], map_size: list[int] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.map_size = list(map_size or [0, 0])  # [0, 0]: each member's own map size (all equal)

    @torch.jit.export
    def set_tta(self, level: int) -> None:
        """Run every member at TTA level ``level`` (0 .. the exported level), with that level's
        temperature: fewer views, more images/s, a little less accuracy (the bundle's report)."""
        for member in self.members:
            member.set_tta(level)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        total = torch.zeros(0)
        n = 0
        for member in self.members:
            p = member(images)
            total = p if n == 0 else total + p
            n += 1
        return total / n

    @torch.jit.export
    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """probs N x C, member_probs M x N x C, member_logits M x N x C (TTA-averaged, before the
        temperature) and ood_score N (the members' mean energy -logsumexp(logits); higher = less
        like the training images)."""
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        logits: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        for member in self.members:
            z = member.logits(images)
            logits.append(z)
            probs.append(torch.softmax(z / member.temperature.float(), dim=1))
        stacked_logits = torch.stack(logits)
        member_probs = torch.stack(probs)
        return {
            "probs": member_probs.mean(0).detach(),
            "member_probs": member_probs.detach(),
            "member_logits": stacked_logits.detach(),
            "ood_score": -torch.logsumexp(stacked_logits, dim=2).mean(0).detach(),
        }

    @torch.jit.export
    def explain(
        self, images: torch.Tensor, class_index: torch.Tensor | None = None, top_k: int = 5
    ) -> dict[str, torch.Tensor]:
        """``scores`` plus Grad-CAM: cam N x K x h x w for the classes ``class_index`` (N x K
        long), or for the ensemble's ``top_k`` most probable classes when it is None.

        Each member's map is Grad-CAM proper (Selvaraju et al. 2017) on its ``cam_layer``: the
        gradient of the member's logit of the class for the image itself (no TTA, no
        temperature) with respect to that layer's activation A, averaged over space per channel
        (weights w), then relu(sum_c w_c A_c). The ensemble's map is the mean of the members'
        maps (resized to ``map_size`` when that is set). Call with gradients enabled
        (``torch.enable_grad()``, not under inference mode) and ``torch.jit.optimized_execution(False)``:
        the optimising executor's differentiable subgraphs hide the activation from autograd.grad
        from the second call on."""
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        if not torch.is_grad_enabled():
            raise RuntimeError("explain() needs gradients: call it under torch.enable_grad()")
        acts: list[torch.Tensor] = []
        firsts: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        for member in self.members:
            act, first, averaged = member.cam_forward(images)
            acts.append(act)
            firsts.append(first)
            logits.append(averaged)
            probs.append(torch.softmax(averaged / member.temperature.float(), dim=1))
        stacked_logits = torch.stack(logits)
        member_probs = torch.stack(probs)
        ensemble_probs = member_probs.mean(0)
        if class_index is None:
            k = min(top_k, ensemble_probs.shape[1])
            class_index = torch.topk(ensemble_probs, k, dim=1).indices
        cls = class_index.to(torch.long)
        total = torch.zeros(0)
        for m in range(len(acts)):
            maps: list[torch.Tensor] = []
            for j in range(cls.shape[1]):
                score = firsts[m].gather(1, cls[:, j : j + 1]).sum()  # images are independent: one backward
                grads = torch.autograd.grad([score], [acts[m]], retain_graph=True)
                grad = grads[0]
                assert grad is not None
                weights = grad.mean(dim=(2, 3), keepdim=True)
                maps.append(torch.relu((weights * acts[m]).sum(dim=1)).detach())
            cam = torch.stack(maps, dim=1)  # N x K x h x w
            if self.map_size[0] > 0 and (cam.shape[2] != self.map_size[0] or cam.shape[3] != self.map_size[1]):
                cam = F.interpolate(cam, size=self.map_size, mode="bilinear", align_corners=False)
            total = cam if m == 0 else total + cam
        return {
            "probs": ensemble_probs.detach(),
            "member_probs": member_probs.detach(),
            "member_logits": stacked_logits.detach(),
            "ood_score": -torch.logsumexp(stacked_logits, dim=2).mean(0).detach(),
            "class_index": cls,
            "cam": total.float() / len(acts),
        }


def cam_layer_of(model: nn.Module) -> str | None:
    """The model's Grad-CAM layer name, or None when the model class has none."""
    name = getattr(model, "cam_layer", None)
    return name if isinstance(name, str) and hasattr(model, "cam_forward") else None


def _map_size(members: list[Member], input_size: tuple[int, int]) -> list[int]:
    """[0, 0] when all members' cam layers give maps of one size, else the input size (maps get resized)."""
    sizes = set()
    with torch.enable_grad():
        for member in members:
            act, _, _ = member.cam_forward(torch.zeros(1, 3, *input_size, dtype=torch.uint8))
            sizes.add(tuple(act.shape[2:]))
    return [0, 0] if len(sizes) == 1 else list(input_size)


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
    flip_tta: bool = False,
    tta: int | None = None,
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
    mirror, 2 mirror + one-pixel translations); ``flip_tta=True`` is level 1. The module gets
    the ``explain`` method when every member's model has a ``cam_layer``; ``manifest_fields`` sets
    optional manifest keys (calibration, uncertain, ood).
    """
    level = (1 if flip_tta else 0) if tta is None else int(tta)
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    ensemble = build_ensemble(
        members, tta=level, temperature=temperature, temperatures=temperatures, input_size=input_size
    )
    scripted = torch.jit.script(ensemble)
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
        extra={**(extra or {}), "flip_tta": level >= 1, "tta": level, "tta_levels": list(range(level + 1))},
        explain=explain,
        precisions=module_precisions(module_path, input_size),
        **(manifest_fields or {}),
    )
    write_manifest(out_dir, manifest)
    if report_dir is not None:
        shutil.copytree(report_dir, out_dir / "report")
    return manifest


def module_precisions(module_path: Path, input_size: tuple[int, int]) -> list[str]:
    """The precisions the saved module runs in: fp32, and bf16 when a copy converted to bfloat16
    (as `worker.runtime.bundle.load_bundle` converts it) returns finite float32 probabilities."""
    copy = torch.jit.load(str(module_path)).eval()
    copy.to(torch.bfloat16)
    try:
        with torch.inference_mode():
            probs = copy(torch.zeros(2, 3, *input_size, dtype=torch.uint8))
    except RuntimeError:
        return ["fp32"]
    return ["fp32", "bf16"] if probs.dtype == torch.float32 and bool(torch.isfinite(probs).all()) else ["fp32"]


def build_ensemble(
    members: list[tuple[nn.Module, dict[str, Any]]],
    *,
    tta: int = 0,
    temperature: float = 1.0,
    temperatures: list[float] | None = None,
    input_size: tuple[int, int] = (32, 32),
) -> Ensemble:
    """The eager ensemble module that `export_bundle` scripts (float32, CPU, eval mode)."""
    wrapped = [
        Member(model.float().eval().cpu(), info["mean"], info["std"], tta, temperature, temperatures)
        for model, info in members
    ]
    map_size = _map_size(wrapped, input_size) if all(cam_layer_of(m) for m, _ in members) else None
    return Ensemble(wrapped, map_size=map_size).eval()


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


# ============================================================================= command line
def bundle_metrics(result: dict[str, Any], data_desc: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers a manifest carries (the full report lies in report/)."""
    from ml.evaluate import describe_split

    top = next(k for k in result if k.startswith("top") and k[3:].isdigit())
    return {
        "accuracy": result["accuracy"],
        top: result[top],
        "macro_f1": result["macro_f1"],
        "ece": result["ece"],
        "nll": result["nll"],
        "n": result["n"],
        "split": describe_split(data_desc),
        "data": data_desc,
    }


def load_members(paths: list[str]) -> list[tuple[str, nn.Module, dict[str, Any], str | None]]:
    """(path, model in float32, checkpoint, metrics.csv text or None) per checkpoint file: a
    training checkpoint (runs/<run>/best.pt, its metrics.csv beside it) or a member file that
    ``--save-members`` wrote (half precision, metrics.csv inside)."""
    from ml.checkpoint import load_model

    loaded = []
    for path in paths:
        model, ckpt = load_model(path)
        csv_text = ckpt.get("metrics_csv")
        beside = Path(path).parent / "metrics.csv"
        if csv_text is None and beside.is_file():
            csv_text = beside.read_text()
        loaded.append((str(path), model, ckpt, csv_text))
    return loaded


@torch.inference_mode()
def ensemble_scores(ensemble: Ensemble, images: Any, batch_size: int = 500) -> dict[str, Any]:
    """``Ensemble.scores`` over uint8 images in batches: member_logits M x N x C and ood_score N (numpy)."""
    images = torch.as_tensor(images)
    logits, ood = [], []
    for i in range(0, len(images), batch_size):
        out = ensemble.scores(images[i : i + batch_size])
        logits.append(out["member_logits"].double().numpy())
        ood.append(out["ood_score"].double().numpy())
    return {"member_logits": np.concatenate(logits, axis=1), "ood_score": np.concatenate(ood)}


def calibrate(
    member_logits: Any,
    labels: Any,
    ood_val: Any,
    ood_generated: Any,
    generated_kinds: list[str],
    *,
    seed: int = 0,
    target_accuracy: float = 0.97,
    ood_max_flagged: float = 0.05,
) -> dict[str, Any]:
    """Fit the temperature and choose both thresholds on one seeded half of the validation images
    (the fit half), and measure everything on the other (the report half)."""
    from ml import calibration as cal
    from ml import metrics, ood

    labels = np.asarray(labels)
    fit, rep = cal.half_split(labels, seed)
    temperature = cal.fit_temperature(member_logits[:, fit], labels[fit])
    before, after = cal.ensemble_probs(member_logits, 1.0), cal.ensemble_probs(member_logits, temperature)

    def quality(probs: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
        c = metrics.calibration(probs[idx], labels[idx])
        return {
            "ece": c["ece"],
            "nll": metrics.nll(probs[idx], labels[idx]),
            "accuracy": metrics.accuracy(probs[idx], labels[idx]),
            "n": int(len(idx)),
            "calibration": c,
        }

    threshold = cal.uncertain_threshold(after[fit], labels[fit], target_accuracy)
    ood_t = cal.ood_threshold(ood_val[fit], ood_max_flagged)
    flagged_generated = ood_generated > ood_t
    per_kind = {
        kind: float(flagged_generated[[k == kind for k in generated_kinds]].mean())
        for kind in dict.fromkeys(generated_kinds)
    }
    result = {
        "split": {
            "method": "seeded stratified halves of the validation images",
            "seed": seed,
            "fit": fit,
            "report": rep,
        },
        "temperature": temperature,
        "before": {"fit": quality(before, fit), "report": quality(before, rep)},
        "after": {"fit": quality(after, fit), "report": quality(after, rep)},
        "probs": after,
        "uncertain": {
            "threshold": threshold,
            "target_accuracy": target_accuracy,
            "fit": cal.selective(after[fit], labels[fit], threshold),
            "report": cal.selective(after[rep], labels[rep], threshold),
        },
        "ood": {
            "threshold": ood_t,
            "max_flagged": ood_max_flagged,
            "validation_flagged_fit": float((ood_val[fit] > ood_t).mean()),
            "validation_flagged_report": float((ood_val[rep] > ood_t).mean()),
            "generated_flagged": float(flagged_generated.mean()),
            "generated_flagged_by_kind": per_kind,
            "auroc": ood.auroc(ood_val[rep], ood_generated),
            "n_generated": int(len(ood_generated)),
            "n_validation_report": int(len(rep)),
        },
        "ood_val": ood_val,
        "ood_generated": ood_generated,
    }
    return result


def calibrate_levels(
    members: list[tuple[nn.Module, dict[str, Any]]], level: int, images: Any, labels: Any, seed: int, batch_size: int
) -> dict[str, dict[str, float]]:
    """For each TTA level below ``level`` (the runtime may switch to them, ``set_tta``): its own
    temperature fitted on the fit half, and accuracy, ECE and NLL on the report half (as for the
    exported level). Keys are the levels as strings (JSON)."""
    from ml import calibration as cal
    from ml import metrics

    labels = np.asarray(labels)
    fit, rep = cal.half_split(labels, seed)
    rows = {}
    for lower in range(level):
        print(f"scoring TTA level {lower} (the runtime may switch to it)")
        logits = ensemble_scores(build_ensemble(members, tta=lower), images, batch_size)["member_logits"]
        temperature = cal.fit_temperature(logits[:, fit], labels[fit])
        probs = cal.ensemble_probs(logits, temperature)
        rows[str(lower)] = {
            "temperature": temperature,
            "ece": metrics.calibration(probs[rep], labels[rep])["ece"],
            "nll": metrics.nll(probs[rep], labels[rep]),
            "accuracy": metrics.accuracy(probs[rep], labels[rep]),
        }
    return rows


def compare_precisions(
    out: Path, fp32_probs: np.ndarray, dataset: Any, device: str, batch_size: int, precisions: list[str] | None
) -> dict[str, dict[str, float]]:
    """The written bundle's accuracy and ECE on the whole validation split in each precision it
    runs in (bf16 as the worker runs it on CPUs with bf16 in hardware), and how far bf16 is from
    the fp32 probabilities the calibration was fitted on."""
    from ml.evaluate import load_predictor
    from ml.metrics import accuracy, calibration

    rows = {}
    for p in precisions or ["fp32"]:
        probs = fp32_probs if p == "fp32" else load_predictor(out, device, p).predict(dataset.images, batch_size)
        rows[p] = {
            "accuracy": accuracy(probs, dataset.labels),
            "ece": float(calibration(probs, dataset.labels)["ece"]),
            "same_top1": float((probs.argmax(1) == fp32_probs.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(probs - fp32_probs).max()),
        }
    return rows


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def calibration_markdown(c: dict[str, Any], data_line: str, by_level: dict[str, dict[str, float]] | None = None) -> str:
    b, a = c["before"]["report"], c["after"]["report"]
    u, o = c["uncertain"], c["ood"]
    lines = [
        '# Calibration, "not sure" and out-of-distribution',
        "",
        f"Data: {data_line}. The validation images are split in two seeded, stratified halves (seed "
        f"{c['split']['seed']}): the temperature and both thresholds are chosen on the fit half "
        f"({len(c['split']['fit'])} images) and every number below is measured on the "
        f"report half ({b['n']} images), which none of them saw.",
        "",
        f"## Temperature scaling: T = {c['temperature']:.4f}",
        "",
        "Each member's TTA-averaged logits are divided by T before the softmax, inside the module.",
        "",
        "| report half | ECE (15 bins) | NLL | accuracy |",
        "|---|---|---|---|",
        f"| before (T = 1) | {_pct(b['ece'])} | {b['nll']:.4f} | {_pct(b['accuracy'])} |",
        f"| after (T = {c['temperature']:.3f}) | {_pct(a['ece'])} | {a['nll']:.4f} | {_pct(a['accuracy'])} |",
        "",
        "![reliability before](reliability_uncalibrated.png) ![reliability after](reliability_calibrated.png)",
        "",
    ]
    if by_level and len(by_level) > 1:
        lines += [
            "## TTA levels the runtime may switch to (`WORKER_TTA`)",
            "",
            "Fewer views per image cost accuracy and buy images/s; each level has its own temperature, fitted "
            "on the fit half (the thresholds below were chosen at the exported level).",
            "",
            "| TTA level | views per member | temperature | accuracy | ECE | NLL |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {(1, 2, 6)[int(k)]} | {r['temperature']:.3f} | {_pct(r['accuracy'])} | {_pct(r['ece'])} | {r['nll']:.4f} |"
            for k, r in sorted(by_level.items())
        ]
        lines.append("")
    lines += [
        f"## Uncertain: calibrated top probability < {u['threshold']:.4f}",
        "",
        f"Rule: the smallest threshold at which the answers at or above it are at least "
        f"{100 * u['target_accuracy']:.0f}% right on the fit half.",
        "",
        "| half | answers flagged | accuracy of answers kept | accuracy of answers flagged |",
        "|---|---|---|---|",
    ]
    for half in ("fit", "report"):
        r = u[half]
        lines.append(
            f"| {half} | {_pct(r['share_flagged'])} | {_pct(r['accuracy_above'])} | {_pct(r['accuracy_below'])} |"
        )
    lines += [
        "",
        f"## Out of distribution: ood_score > {o['threshold']:.4f}",
        "",
        "The score is the members' mean energy, -logsumexp(TTA-averaged logits); the threshold flags "
        f"at most {100 * o['max_flagged']:.0f}% of the fit half's validation images.",
        "",
        f"- validation images flagged (report half): {_pct(o['validation_flagged_report'])}",
        f"- generated non-CIFAR images flagged ({o['n_generated']}: noise, flat colours, text, stripes, "
        f"checkerboards; `ml.ood.generate`): {_pct(o['generated_flagged'])}",
        "- by kind: " + ", ".join(f"{k} {_pct(v)}" for k, v in o["generated_flagged_by_kind"].items()),
        f"- AUROC, report-half validation images against the generated set: {o['auroc']:.4f} "
        f"(max-softmax-probability score for comparison: {o['auroc_msp']:.4f})",
        "",
        "![ood scores](ood_scores.png)",
    ]
    return "\n".join(lines) + "\n"


def _summary(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's calibration, uncertain and ood entries."""
    u, o = c["uncertain"], c["ood"]
    split = {k: c["split"][k] for k in ("method", "seed")}
    return {
        "calibration": {
            "method": "temperature scaling: each member's TTA-averaged logits / T, then softmax (inside the module)",
            "temperature": c["temperature"],
            "fit_on": {**split, "half": "fit", "n": int(len(c["split"]["fit"]))},
            "reported_on": {**split, "half": "report", "n": int(len(c["split"]["report"]))},
            "before": {k: c["before"]["report"][k] for k in ("ece", "nll", "accuracy")},
            "after": {k: c["after"]["report"][k] for k in ("ece", "nll", "accuracy")},
        },
        "uncertain": {
            "threshold": u["threshold"],
            "meaning": "a prediction is flagged uncertain when its calibrated top probability is below the "
            f"threshold: the smallest threshold at which the answers at or above it were at least "
            f"{100 * u['target_accuracy']:.0f}% right on the fit half of the validation images",
            "target_accuracy": u["target_accuracy"],
            "accuracy_above": u["report"]["accuracy_above"],
            "accuracy_below": u["report"]["accuracy_below"],
            "share_flagged": u["report"]["share_flagged"],
            "measured_on": "report half of the validation images",
        },
        "ood": {
            "score": "ood_score: the members' mean energy -logsumexp(TTA-averaged logits); higher = less like the training images",
            "threshold": o["threshold"],
            "meaning": "an image is flagged out of distribution when ood_score > threshold; the threshold flags "
            f"at most {100 * o['max_flagged']:.0f}% of the fit half of the validation images",
            "validation_flagged": o["validation_flagged_report"],
            "generated_flagged": o["generated_flagged"],
            "generated_flagged_by_kind": o["generated_flagged_by_kind"],
            "auroc": o["auroc"],
            "auroc_msp": o["auroc_msp"],
            "generated_set": "ml.ood.generate: noise, flat colours, rendered text, stripes, checkerboards",
            "measured_on": "report half of the validation images against the generated set",
        },
    }


def main(argv: list[str]) -> None:
    from ml import ood, plots
    from ml.evaluate import (
        add_data_arguments,
        check_classes,
        data_from_args,
        describe_split,
        evaluate_probs,
        load_predictor,
        member_info,
        summary_line,
        write_report,
    )

    parser = argparse.ArgumentParser(
        prog="python -m ml export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoints",
        nargs="+",
        help="checkpoint files (runs/<run>/best.pt, or <bundle>/members/*.pt); several make an ensemble",
    )
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. bundles/cifar10-resnet20")
    parser.add_argument("--name", help="bundle name (default: the folder name)")
    parser.add_argument(
        "--version", help="version recorded with every prediction (default: <name>-<UTC date and time>)"
    )
    parser.add_argument(
        "--tta",
        type=int,
        choices=(0, 1, 2),
        help="test-time augmentation inside the module: 0 none (default), 1 mirror, 2 mirror + one-pixel translations",
    )
    parser.add_argument("--flip-tta", action="store_true", help="the same as --tta 1")
    parser.add_argument(
        "--save-members",
        action="store_true",
        help="also write each member's weights (half precision) to <bundle>/members/, to re-export without training",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    parser.add_argument(
        "--no-report", action="store_true", help="skip the evaluation, the report and the calibration (T = 1)"
    )
    g = parser.add_argument_group("calibration and thresholds (on the validation split)")
    g.add_argument("--calibration-seed", type=int, default=0, help="seed of the fit/report halves (default 0)")
    g.add_argument(
        "--uncertain-accuracy",
        type=float,
        default=0.97,
        help="answers at or above the uncertain threshold must be this accurate on the fit half (default 0.97)",
    )
    g.add_argument(
        "--ood-max-flagged",
        type=float,
        default=0.05,
        help="largest share of validation images the OOD threshold may flag (default 0.05)",
    )
    g.add_argument(
        "--ood-per-kind", type=int, default=200, help="generated non-CIFAR images per kind (default 200; 5 kinds)"
    )
    add_data_arguments(parser, tta=False)
    args = parser.parse_args(argv)
    if args.flip_tta and args.tta not in (None, 1):
        parser.error("--flip-tta is --tta 1; do not combine it with another --tta")
    level = 1 if args.flip_tta else (args.tta or 0)

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    try:
        loaded = load_members(args.checkpoints)
        classes = list(loaded[0][2]["classes"])
        for path, _, ckpt, _ in loaded[1:]:
            check_classes(ckpt["classes"], classes, path)
        members = [(model, member_info(ckpt, path)) for path, model, ckpt, _ in loaded]
        spec = members[0][1]["data"]
        dataset = data_desc = None
        if not args.no_report:  # load the data first: a missing source should fail before anything is written
            dataset, data_desc = data_from_args(spec, args)
            check_classes(classes, dataset.classes, "the bundle")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        parser.error(str(exc))
    for _, info in members[1:]:
        if {k: info["data"].get(k) for k in ("data", "val_per_class", "split_seed")} != {
            k: spec.get(k) for k in ("data", "val_per_class", "split_seed")
        }:
            print(
                f"warning: {info['checkpoint']} was trained on a different data split than {members[0][1]['checkpoint']}"
            )

    name = args.name or out.resolve().name
    version = args.version or f"{name}-{datetime.now(UTC):%Y.%m.%d-%H%M}"
    command = shlex.join(["python", "-m", "ml", "export", *argv])
    keep = {}  # a re-export keeps the hand-written training notes of the old report
    for note in ("TRAINING.md",):
        if (out / "report" / note).is_file():
            keep[note] = (out / "report" / note).read_text()
    # ... and the study reports written beside it (python -m ml study), moved aside meanwhile
    studies_aside = None
    if (out / "report" / "studies").is_dir():
        studies_aside = Path(tempfile.mkdtemp(prefix="studies-", dir=out.parent)) / "studies"
        shutil.move(str(out / "report" / "studies"), studies_aside)

    temperature, fields, cal = 1.0, {}, None
    if not args.no_report:
        print(f"scoring {len(members)} member(s) with TTA level {level} on {describe_split(data_desc)}")
        eager = build_ensemble(members, tta=level)
        val = ensemble_scores(eager, dataset.images, args.batch_size)
        generated, kinds = ood.generate(args.ood_per_kind, seed=1)
        gen = ensemble_scores(eager, generated, args.batch_size)
        cal = calibrate(
            val["member_logits"],
            dataset.labels,
            val["ood_score"],
            gen["ood_score"],
            kinds,
            seed=args.calibration_seed,
            target_accuracy=args.uncertain_accuracy,
            ood_max_flagged=args.ood_max_flagged,
        )
        from ml.calibration import ensemble_probs

        gen_probs = ensemble_probs(gen["member_logits"], cal["temperature"])
        rep = cal["split"]["report"]
        cal["ood"]["auroc_msp"] = ood.auroc(1 - cal["probs"][rep].max(axis=1), 1 - gen_probs.max(axis=1))
        temperature, fields = cal["temperature"], _summary(cal)
        by_level = calibrate_levels(
            members, level, dataset.images, dataset.labels, args.calibration_seed, args.batch_size
        )
        by_level[str(level)] = {"temperature": temperature, **fields["calibration"]["after"]}
        fields["calibration"]["by_tta_level"] = by_level

    manifest = export_bundle(
        members,
        out,
        classes=classes,
        name=name,
        version=version,
        superclasses=loaded[0][2].get("superclasses"),
        tta=level,
        temperature=temperature,
        temperatures=[fields["calibration"]["by_tta_level"][str(v)]["temperature"] for v in range(level + 1)]
        if fields
        else None,
        command=command,
        overwrite=args.overwrite,
        extra={"data": spec},
        manifest_fields=fields,
    )
    if args.save_members:
        (out / "members").mkdir()
        for i, ((_, model, ckpt, csv_text), info) in enumerate(zip(loaded, manifest.members, strict=True)):
            seed = info.get("seed")
            file = out / "members" / f"{i + 1:02d}-{ckpt['arch']}{'' if seed is None else f'-seed{seed}'}.pt"
            save_member(file, model, ckpt, csv_text)
            info["member_file"] = str(file.relative_to(out))
        write_manifest(out, manifest)
    print(f"wrote {out}: {len(members)} member(s), {sum(m[1]['params'] for m in members) / 1e6:.2f} M parameters")
    if args.no_report:
        if studies_aside is not None:
            (out / "report").mkdir(exist_ok=True)
            shutil.move(str(studies_aside), out / "report" / "studies")
            studies_aside.parent.rmdir()
        return

    # the written bundle, through the loader the worker uses (checksum verified), must give the
    # probabilities the calibration was measured on
    predictor = load_predictor(out, args.device)
    check = slice(0, min(len(dataset), 500))
    written = predictor.predict(dataset.images[check], batch_size=args.batch_size)
    gap = float(np.abs(written - cal["probs"][check]).max()) if len(written) else 0.0
    if gap > 1e-4:
        raise SystemExit(f"the written module's probabilities differ from the calibrated ones by {gap:.2e}")
    probs = cal["probs"]
    precision_rows = compare_precisions(out, probs, dataset, args.device, args.batch_size, manifest.precisions)
    result = evaluate_probs(probs, dataset.labels, classes)
    report_dir = out / "report"
    with tempfile.TemporaryDirectory() as tmp:
        curves = []
        for i, (path, _, _, csv_text) in enumerate(loaded):
            if csv_text:
                f = Path(tmp) / f"{i}.csv"
                f.write_text(csv_text)
                curves.append((Path(path).parent.name if Path(path).parent.name != "members" else Path(path).stem, f))
        write_report(
            report_dir,
            result,
            probs=probs,
            labels=dataset.labels,
            images=dataset.images,
            data=data_desc,
            model={"kind": "bundle", "path": str(out), **predictor.info},
            metrics_csvs=curves,
            title=f"{name} ({version})",
            tta=level >= 1,
            command=manifest.command,
            extra={"tta_level": level, "calibration": fields},
        )
    for note, text in keep.items():
        (report_dir / note).write_text(text)
    if studies_aside is not None:
        shutil.move(str(studies_aside), report_dir / "studies")
        studies_aside.parent.rmdir()
    # calibration report: on the report half only
    for key, fname, label in (
        ("before", "reliability_uncalibrated.png", "T = 1"),
        ("after", "reliability_calibrated.png", f"T = {temperature:.3f}"),
    ):
        c = cal[key]["report"]["calibration"]
        plots.reliability(
            c,
            report_dir / fname,
            title=f"{label}: ECE {100 * c['ece']:.2f}% (report half, {cal[key]['report']['n']} images)",
        )
    plots.score_histogram(
        {
            "validation (report half)": cal["ood_val"][cal["split"]["report"]],
            "generated non-CIFAR": cal["ood_generated"],
        },
        threshold=cal["ood"]["threshold"],
        path=report_dir / "ood_scores.png",
        xlabel="ood_score (mean energy)",
        title=f"OOD score: AUROC {cal['ood']['auroc']:.4f}",
    )
    (report_dir / "calibration.md").write_text(
        calibration_markdown(cal, describe_split(data_desc), fields["calibration"].get("by_tta_level"))
    )
    (report_dir / "calibration.json").write_text(json.dumps(fields, indent=2) + "\n")
    manifest.metrics = {**bundle_metrics(result, data_desc), "precisions": precision_rows}
    write_manifest(out, manifest)
    (report_dir / "precision.json").write_text(json.dumps(precision_rows, indent=2) + "\n")
    print(summary_line(result))
    for p, row in precision_rows.items():
        print(
            f"{p}: accuracy {_pct(row['accuracy'])}, ECE {_pct(row['ece'])}, top-1 as fp32 on {_pct(row['same_top1'])}, "
            f"largest probability difference {row['max_prob_diff']:.4f}"
        )
    b, a = fields["calibration"]["before"], fields["calibration"]["after"]
    print(
        f"temperature {temperature:.4f}: ECE {100 * b['ece']:.2f}% -> {100 * a['ece']:.2f}%, NLL {b['nll']:.4f} -> {a['nll']:.4f} (report half)"
    )
    u, o = fields["uncertain"], fields["ood"]
    print(
        f"uncertain below {u['threshold']:.4f}: {_pct(u['share_flagged'])} flagged, kept {_pct(u['accuracy_above'])} right, "
        f"flagged {_pct(u['accuracy_below'])} right; OOD above {o['threshold']:.4f}: AUROC {o['auroc']:.4f}, "
        f"generated flagged {_pct(o['generated_flagged'])}, validation flagged {_pct(o['validation_flagged'])}"
    )
    print(f"report: {report_dir}; metrics in {out / 'manifest.json'}")
