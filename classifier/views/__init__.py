"""HTML pages: sign-up, upload, result, history, delete, and the owner-only image/thumbnail views.

Views stay thin: reads go through `classifier.selectors`, writes through `classifier.services`.

- `classifier.views.upload`: home (and the demo), sign-up, upload;
- `classifier.views.jobs`: result, history, bulk delete, delete;
- `classifier.views.files`: the owner-only image and thumbnail, the favicon;
- `classifier.views.model`: "About the model" (`classifier.model_card`).
"""

from classifier.views.files import favicon, image, thumbnail
from classifier.views.jobs import bulk_delete, delete, history, result
from classifier.views.model import about_model, model_figure
from classifier.views.upload import _upload_summary, demo, home, signup, upload

__all__ = [
    "_upload_summary",
    "about_model",
    "model_figure",
    "bulk_delete",
    "delete",
    "demo",
    "favicon",
    "history",
    "home",
    "image",
    "result",
    "signup",
    "thumbnail",
    "upload",
]
