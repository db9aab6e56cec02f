"""``{% feedback_form c %}``: the feedback box of the result page (classifier.evaluation)."""

from __future__ import annotations

from django import template

from classifier.evaluation import selectors, services
from classifier.evaluation.models import ModelVersion

register = template.Library()


@register.inclusion_tag("classifier/_feedback.html", takes_context=True)
def feedback_form(context, classification) -> dict:
    request = context["request"]
    classes = services.classes_for(classification)
    if classes is None:  # not finished yet: the champion's classes (the page reveals the box when done)
        champion = selectors.model_version_by_alias(ModelVersion.Alias.CHAMPION)
        classes = list(champion.classes) if champion else []
    return {
        "c": classification,
        "feedback": selectors.feedback_for(user=request.user, classification=classification),
        "classes": classes,
        "csrf_token": context.get("csrf_token"),
    }
