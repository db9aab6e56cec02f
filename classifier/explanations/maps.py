"""How an explanation's Grad-CAM maps are stored: ``quantised`` (at the cam layer's resolution,
0-255 against each map's own peak, in a JSON field) and ``initial_status`` (where the maps stand
when the explanation is stored with its answer: ``Explanation.heatmaps_status``). Used by the
answer's path (services.py) and the maps' path (heatmaps.py) alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from classifier.models import Classification, Explanation

if TYPE_CHECKING:
    from worker.runtime.explain import ExplainedPrediction

HeatmapsStatus = Explanation.HeatmapsStatus


def quantised(heatmaps: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """The stored form of the maps (label -> array, best class first): each map's values as 0-255
    of its own peak, flattened, with its shape, its peak and the labels' order."""
    if not heatmaps:
        return {}
    maps, peaks, size = {}, {}, None
    for label, values in heatmaps.items():
        v = np.asarray(values, dtype=np.float64)
        size = list(v.shape)
        peak = float(v.max()) if v.size else 0.0
        maps[label] = (np.round(v / peak * 255) if peak > 0 else np.zeros_like(v)).astype(int).ravel().tolist()
        peaks[label] = peak
    # JSON objects lose their key order in PostgreSQL's jsonb: the best-first order is kept apart
    return {"size": size, "labels": list(maps), "maps": maps, "peak": peaks}


def initial_status(classification: Classification, result: ExplainedPrediction) -> str:
    """The heatmaps status of an explanation stored with its answer."""
    if result.heatmaps:
        return HeatmapsStatus.READY
    if not result.explainable:
        return HeatmapsStatus.UNAVAILABLE
    return HeatmapsStatus.PENDING if classification.heatmaps_requested else HeatmapsStatus.NOT_REQUESTED
