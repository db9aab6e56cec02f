"""Explained predictions: the bundle's ``explain`` method (Grad-CAM), member agreement, "not sure" and OOD.

    predictor = get_predictor(settings.MODEL_BUNDLE)
    [result] = predict_explained(predictor, [decode_for_model(data)], top_k=5)
    result.predictions        # [(label, probability), ...] best first, as Predictor.predict gives
    result.heatmaps           # {label: h x w float32 Grad-CAM map} for those classes, or None
    result.members, result.agree, result.uncertain, result.ood_score, result.ood, result.superclass
    result.prediction_set     # ["cat", "dog"]: the classes the model cannot rule out at the manifest's coverage

A bundle written by today's ``ml export`` has ``explain(images, class_index, top_k)`` (one forward
pass per member with gradients on the identity view, the other TTA views without, and one short
backward per class down to the cam layer) and ``scores(images)``; the thresholds for
``uncertain`` and ``ood`` come from its manifest. An older bundle has neither: the predictions
are the same, and every explanation field is None ("no explanation available").

TorchScript modules have no hooks, so Grad-CAM is computed inside the module; this file only
calls it under ``torch.enable_grad()`` and turns the tensors into plain Python values
(worker/runtime/pictures.py renders them, without torch, for the web side). Imports no Django.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from worker.runtime.manifest import set_thresholds
from worker.runtime.predictor import Prediction, Predictor
from worker.runtime.threads import threads_for


@dataclass
class ExplainedPrediction:
    predictions: Prediction  # top-k (label, probability), best first
    model_input: np.ndarray  # uint8 3 x H x W: what the model saw
    heatmaps: dict[str, np.ndarray] | None = None  # label -> h x w float32 map (top-k classes, same order)
    layer: str = ""  # the cam layer(s) the maps explain
    members: list[dict] | None = None  # per member: arch, label, probability (its own top class)
    agree: int | None = None  # members whose top class is the ensemble's
    ood_score: float | None = None
    ood: bool | None = None  # ood_score above the manifest's threshold
    uncertain: bool | None = None  # top probability below the manifest's threshold
    superclass: str | None = None
    num_classes: int | None = None
    # every class with calibrated probability >= the manifest's prediction_set threshold (always the top
    # class), most probable first: the true class is in it for ``set_coverage`` of held-out images (ml.conformal)
    prediction_set: list[str] | None = None
    set_coverage: float | None = None
    # {"uncertain": t, "ood": t, "set": [t per class]} from the manifest
    thresholds: dict = field(default_factory=dict)
    explainable: bool = False  # the bundle has an explain method (maps can be computed, maybe later)


def supports_explain(predictor: Predictor) -> bool:
    """Whether the bundle's module has the exported ``explain`` method (loads the bundle)."""
    return hasattr(predictor.load().explainer, "explain")


def _threshold(entry: dict | None) -> float | None:
    value = (entry or {}).get("threshold")
    return float(value) if isinstance(value, int | float) else None


def predict_explained(
    predictor: Predictor,
    images: list[np.ndarray],
    top_k: int = 5,
    *,
    heatmaps: bool = True,
    labels: list[list[str]] | None = None,
) -> list[ExplainedPrediction]:
    """Top-k predictions of ``images`` (uint8 3 x H x W each) with their explanations.

    The probabilities are the module's ``forward`` ones (``explain`` returns the same values), so
    the predictions equal ``predictor.predict(images, top_k)``. ``heatmaps=False`` runs the
    bundle's ``scores`` only (no gradients: the members, agreement, "not sure" and OOD, at the cost
    of a plain forward pass); the Grad-CAM maps are then None. ``labels`` (one list per image, e.g.
    the stored top-5) names the classes to draw maps for; by default the top-k of this pass."""
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if not images:
        return []
    bundle = predictor.load()
    # Grad-CAM needs gradients: beside an int8 module (precision int8) the maps come from the
    # float one; ``scores`` alone runs on the module the predictions come from.
    module = bundle.explainer if heatmaps else bundle.module
    manifest = bundle.manifest
    has_explain, has_scores = hasattr(module, "explain"), hasattr(module, "scores")
    if has_scores and not heatmaps:
        has_explain = False  # scores alone: one plain forward pass
    if not (has_explain or has_scores):
        return [
            ExplainedPrediction(predictions=top, model_input=image, num_classes=len(manifest.classes))
            for top, image in zip(predictor.predict(images, top_k=top_k), images, strict=True)
        ]
    batch = torch.from_numpy(np.stack(images))
    if tuple(batch.shape[2:]) != predictor.input_size or batch.dtype != torch.uint8 or batch.shape[1] != 3:
        raise ValueError(f"expected uint8 3 x {predictor.input_size} images, got {batch.dtype} {tuple(batch.shape)}")
    k = min(top_k, len(manifest.classes))
    class_index = None
    if labels is not None and has_explain:
        if len(labels) != len(images) or len({len(row) for row in labels}) > 1 or not labels[0]:
            raise ValueError("labels: one non-empty list per image, all of the same length")
        lookup = {c: i for i, c in enumerate(manifest.classes)}
        unknown = sorted({label for row in labels for label in row} - set(lookup))
        if unknown:
            raise ValueError(f"labels not in this bundle: {unknown}")
        class_index = torch.tensor([[lookup[label] for label in row] for row in labels], dtype=torch.long)
    outputs = []
    start = 0
    with threads_for(bundle.device, len(batch), predictor.lone_threads):
        for chunk in torch.split(batch, predictor.max_batch):
            x = chunk.to(bundle.device)
            if has_explain:
                cls = None if class_index is None else class_index[start : start + len(chunk)].to(bundle.device)
                # Gradients on, and the JIT's optimising executor off: from the second call on it
                # rewrites the graph into differentiable subgraphs whose intermediate activations
                # autograd.grad can no longer reach ("appears to not have been used in the graph").
                with torch.enable_grad(), torch.jit.optimized_execution(False):
                    out = module.explain(x, cls, k)
            else:
                with torch.inference_mode():
                    out = module.scores(x)
            outputs.append({key: value.detach().float().cpu() for key, value in out.items()})
            start += len(chunk)
    merged = {
        key: torch.cat([o[key] for o in outputs], dim=1 if key.startswith("member_") else 0) for key in outputs[0]
    }
    return _results(merged, images, manifest, k, has_explain, explainable=hasattr(bundle.explainer, "explain"))


def _prediction_set(
    probs: torch.Tensor, order: torch.Tensor, thresholds: list[float], classes: list[str], top: int
) -> list[str]:
    """The top class (index ``top``, the answer's), then the other classes at or above their threshold,
    most probable first (ml.conformal's rule: with one threshold per class, others can pass theirs
    while the top class misses its own, and it is in the set all the same)."""
    others = [j for j in map(int, order.tolist()) if j != top and float(probs[j]) >= thresholds[j]]
    return [classes[j] for j in [top, *others]]


def _results(
    out: dict[str, torch.Tensor], images, manifest, k: int, has_explain: bool, explainable: bool
) -> list[ExplainedPrediction]:
    classes = manifest.classes
    probs = out["probs"]
    values, indices = torch.topk(probs, k, dim=1)
    member_top_p, member_top = out["member_probs"].max(dim=2)  # M x N
    archs = [m.get("arch", "?") for m in manifest.members] or ["?"] * member_top.shape[0]
    t_uncertain, t_ood = _threshold(manifest.uncertain), _threshold(manifest.ood)
    t_set = set_thresholds(manifest.prediction_set, len(classes))
    set_coverage = (manifest.prediction_set or {}).get("coverage") if t_set is not None else None
    order = torch.argsort(probs, dim=1, descending=True, stable=True)
    layers = (manifest.explain or {}).get("layers") or []
    layer = ", ".join(dict.fromkeys(layers))
    results = []
    for i, image in enumerate(images):
        top = [(classes[j], float(p)) for p, j in zip(values[i].tolist(), indices[i].tolist(), strict=True)]
        members = [
            {
                "arch": archs[m] if m < len(archs) else "?",
                "label": classes[int(member_top[m, i])],
                "probability": float(member_top_p[m, i]),
            }
            for m in range(member_top.shape[0])
        ]
        score = float(out["ood_score"][i])
        heatmaps = None
        if has_explain:
            cls = out["class_index"][i].long().tolist()
            heatmaps = {classes[c]: out["cam"][i, j].numpy().astype(np.float32) for j, c in enumerate(cls)}
        results.append(
            ExplainedPrediction(
                predictions=top,
                model_input=image,
                heatmaps=heatmaps,
                layer=layer,
                members=members,
                agree=sum(m["label"] == top[0][0] for m in members),
                ood_score=score,
                ood=None if t_ood is None else score > t_ood,
                uncertain=None if t_uncertain is None else top[0][1] < t_uncertain,
                superclass=(manifest.superclasses or {}).get(top[0][0]),
                num_classes=len(classes),
                prediction_set=None
                if t_set is None
                else _prediction_set(probs[i], order[i], t_set, classes, int(indices[i, 0])),
                set_coverage=set_coverage,
                thresholds={"uncertain": t_uncertain, "ood": t_ood, "set": t_set},
                explainable=explainable,
            )
        )
    return results
