"""``{% feedback_form c %}``: the feedback box of the result page (classifier.evaluation)."""

from __future__ import annotations

from django import template

from classifier.evaluation import selectors, services

register = template.Library()


@register.inclusion_tag("classifier/_feedback.html", takes_context=True)
def feedback_form(context, classification) -> dict:
    request = context["request"]
    classes = services.classes_for(classification)
    if classes is None:
        # Not finished yet: the champion's classes (the page reveals the box when done). A done job
        # of an unregistered version can only be marked right or wrong (the service refuses labels).
        done = classification.status == classification.Status.DONE
        classes = [] if done else selectors.champion_classes()
    return {
        "c": classification,
        "feedback": selectors.feedback_for(user=request.user, classification=classification),
        "classes": classes,
        "csrf_token": context.get("csrf_token"),
    }
