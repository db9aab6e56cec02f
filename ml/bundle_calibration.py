"""Calibration of an exported ensemble on held-out images: the temperature (one per TTA level),
the ``uncertain`` and OOD thresholds, the prediction sets' threshold (`ml.conformal`), bf16 against
fp32, and the bundle's calibration.md.

Used by `ml.export` (``python -m ml export``); the numbers go to the manifest and ``report/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml import conformal
from ml.bundle_module import Ensemble, build_ensemble
from ml.tta import views


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
    set_coverage: float = 0.95,
    set_classwise: bool = False,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Fit the temperature and choose the thresholds (uncertain, OOD, the prediction sets' at
    ``set_coverage``, one per class with ``set_classwise``) on one seeded half of the validation
    images (the fit half), and measure everything on the other (the report half). ``classes``
    names the classes in the reports (default: their indices)."""
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
        "prediction_set": conformal.fit_and_report(after, labels, fit, rep, set_coverage, set_classwise),
        "classes": list(classes) if classes is not None else [str(k) for k in range(member_logits.shape[2])],
        "ood_val": ood_val,
        "ood_generated": ood_generated,
    }
    return result


def calibrate_levels(
    members: list[tuple[nn.Module, dict[str, Any]]],
    levels: list[int],
    images: Any,
    labels: Any,
    seed: int,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """For each TTA level of ``levels`` (those besides the module's own that the runtime may
    switch to, ``set_tta``): its own temperature fitted on the fit half, and accuracy, ECE and NLL
    on the report half (as for the module's level). Keys are the levels as strings (JSON)."""
    from ml import calibration as cal
    from ml import metrics

    labels = np.asarray(labels)
    fit, rep = cal.half_split(labels, seed)
    rows = {}
    for other in levels:
        print(f"scoring TTA level {other} (the runtime may switch to it)")
        logits = ensemble_scores(build_ensemble(members, tta=other), images, batch_size)["member_logits"]
        temperature = cal.fit_temperature(logits[:, fit], labels[fit])
        probs = cal.ensemble_probs(logits, temperature)
        rows[str(other)] = {
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
    runs in (bf16 as the worker runs it on CPUs with bf16 in hardware; int8, the ``--int8`` module,
    on the CPU), and how far each is from the fp32 probabilities the calibration was fitted on."""
    from ml.evaluate import load_predictor
    from ml.metrics import accuracy, calibration

    rows = {}
    for p in precisions or ["fp32"]:
        on = "cpu" if p == "int8" else device  # int8 kernels are the CPU's
        probs = fp32_probs if p == "fp32" else load_predictor(out, on, p).predict(dataset.images, batch_size)
        rows[p] = {
            "accuracy": accuracy(probs, dataset.labels),
            "ece": float(calibration(probs, dataset.labels)["ece"]),
            "same_top1": float((probs.argmax(1) == fp32_probs.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(probs - fp32_probs).max()),
        }
    return rows


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def calibration_markdown(c: dict[str, Any], data_line: str, by_level: dict[str, dict[str, float]] | None = None) -> str:
    b, a = c["before"]["report"], c["after"]["report"]
    u, o = c["uncertain"], c["ood"]
    lines = [
        '# Calibration, "not sure", prediction sets and out-of-distribution',
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
        f"| before (T = 1) | {pct(b['ece'])} | {b['nll']:.4f} | {pct(b['accuracy'])} |",
        f"| after (T = {c['temperature']:.3f}) | {pct(a['ece'])} | {a['nll']:.4f} | {pct(a['accuracy'])} |",
        "",
        "![reliability before](reliability_uncalibrated.png) ![reliability after](reliability_calibrated.png)",
        "",
    ]
    if by_level and len(by_level) > 1:
        lines += [
            "## TTA levels the runtime may switch to (`WORKER_TTA`)",
            "",
            "Each level trades views per image (the model's arithmetic) against accuracy; each has its own temperature, fitted "
            "on the fit half (the thresholds below were chosen at the module's own level).",
            "",
            "| TTA level | views per member | temperature | accuracy | ECE | NLL |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {views(int(k))} | {r['temperature']:.3f} | {pct(r['accuracy'])} | {pct(r['ece'])} | {r['nll']:.4f} |"
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
            f"| {half} | {pct(r['share_flagged'])} | {pct(r['accuracy_above'])} | {pct(r['accuracy_below'])} |"
        )
    lines += [
        "",
        *(conformal.markdown(c["prediction_set"], c["classes"]) + [""] if "prediction_set" in c else []),
        f"## Out of distribution: ood_score > {o['threshold']:.4f}",
        "",
        "The score is the members' mean energy, -logsumexp(TTA-averaged logits); the threshold flags "
        f"at most {100 * o['max_flagged']:.0f}% of the fit half's validation images.",
        "",
        f"- validation images flagged (report half): {pct(o['validation_flagged_report'])}",
        f"- generated non-CIFAR images flagged ({o['n_generated']}: noise, flat colours, text, stripes, "
        f"checkerboards; `ml.ood.generate`): {pct(o['generated_flagged'])}",
        "- by kind: " + ", ".join(f"{k} {pct(v)}" for k, v in o["generated_flagged_by_kind"].items()),
        f"- AUROC, report-half validation images against the generated set: {o['auroc']:.4f} "
        f"(max-softmax-probability score for comparison: {o['auroc_msp']:.4f})",
        "",
        "![ood scores](ood_scores.png)",
    ]
    return "\n".join(lines) + "\n"


def summary_fields(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's calibration, uncertain, ood and prediction_set entries."""
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
        **(
            {"prediction_set": conformal.manifest_field(c["prediction_set"], c["classes"])}
            if "prediction_set" in c
            else {}
        ),
    }
