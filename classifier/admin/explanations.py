"""Admin: a classification's explanation (heatmap, model's input, members, flags) and, for staff,
the feature maps of one member (the 16 most active channels of its first and a middle stage)."""

from __future__ import annotations

import base64

from django.conf import settings
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from classifier import explanations
from classifier.models import Classification
from worker.runtime.pictures import heatmap_png


def _data_png(data: bytes, width: int, css: str = "") -> str:
    return format_html(
        '<img src="data:image/png;base64,{}" width="{}" height="{}" alt="" style="{}">',
        base64.b64encode(data).decode(),
        width,
        width,
        css,
    )


def explanation_panel(obj: Classification) -> str:
    e = explanations.explanation_of(obj)
    link = format_html(
        '<a href="{}">Feature maps of one member</a>',
        reverse("admin:classifier_classification_feature_maps", args=[obj.pk]),
    )
    if e is None:
        return format_html("No explanation stored. {}", link)
    import numpy as np

    parts = []
    maps = (e.heatmaps or {}).get("maps") or {}
    if maps:
        from classifier.explanations import heatmap_labels

        label = heatmap_labels(e.heatmaps)[0]
        values = maps[label]
        h, w = e.heatmaps["size"]
        heat = heatmap_png(np.asarray(values, dtype=np.float64).reshape(h, w) / 255.0, size=128)
        parts.append(format_html("Grad-CAM of {} ({}): {}", label, e.layer, _data_png(heat, 128)))
    else:
        why = {
            e.HeatmapsStatus.PENDING: "being drawn (they follow the answer)",
            e.HeatmapsStatus.NOT_REQUESTED: "not requested (an API upload without ?explain=true; "
            "the owner's result page asks for them)",
        }.get(e.heatmaps_status, "unavailable (the bundle had no explain method, or drawing failed)")
        parts.append(format_html("No heatmap: {}.", why))
    if e.model_input:
        parts.append(format_html("Model input: {}", _data_png(bytes(e.model_input), 128, "image-rendering: pixelated")))
    members = format_html_join(
        ", ", "{} {} {}", ((m.get("arch"), m.get("label"), f"{m.get('probability', 0):.1%}") for m in e.members)
    )
    parts.append(
        format_html(
            "Members: {} ({}). Uncertain: {} · OOD: {} (score {}) · answer set: {} · superclass: {}",
            members or "-",
            explanations.agreement_text(e.agree, e.members) or "-",
            e.uncertain,
            e.ood,
            "-" if e.ood_score is None else f"{e.ood_score:.3f}",
            (" / ".join(e.prediction_set) + f" at {e.prediction_set_coverage or 0:.0%}") if e.prediction_set else "-",
            e.superclass or "-",
        )
    )
    parts.append(link)
    return format_html_join("", "<p>{}</p>", ((p,) for p in parts))


def feature_maps_view(model_admin, request: HttpRequest, id) -> TemplateResponse:
    if not model_admin.has_view_permission(request):
        raise Http404("No such classification.")
    classification = Classification.objects.filter(pk=id).first()
    if classification is None:
        raise Http404("No such classification.")
    result = explanations.feature_maps(classification, settings.MODEL_BUNDLE)
    stages = [
        {**stage, "img": _data_png(stage["png"], 200, "image-rendering: pixelated")}
        for stage in result.get("stages", [])
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Feature maps: {classification.original_filename or classification.pk}",
        "opts": Classification._meta,
        "classification": classification,
        "result": result,
        "stages": stages,
        "change_url": reverse("admin:classifier_classification_change", args=[classification.pk]),
    }
    return TemplateResponse(request, "admin/classifier/classification/feature_maps.html", context)
