"""Report markdown (report.md, TRAINING.md, ablations.md) to sanitised HTML for the admin.

The text comes from a bundle's report folder, which anyone who can put a bundle on the server
controls, so the HTML from `markdown` goes through nh3 (the ammonia sanitiser): a whitelist of
tags and attributes, no scripts, styles or event handlers, links only to http(s)/mailto or
relative URLs. Images may only point at the report's own figures (``![cm](confusion_matrix.png)``
becomes the staff-only figure URL); any other image source is removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import markdown
import nh3

ALLOWED_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "blockquote", "pre", "code",
    "em", "strong", "del", "ul", "ol", "li", "dl", "dt", "dd", "a", "img",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
EXTENSIONS = ["tables", "fenced_code", "sane_lists"]
NO_SOURCE_IMG = re.compile(r"<img(?![^>]*\bsrc=)[^>]*>")


def render_markdown(text: str, *, image_urls: Mapping[str, str] | None = None) -> str:
    """Sanitised HTML for ``text``. ``image_urls`` maps a file name the markdown may use as an
    image source (``confusion_matrix.png``) to the URL that serves it."""
    images = dict(image_urls or {})

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            return images.get(value.removeprefix("./"))
        return value

    html = markdown.markdown(text, extensions=EXTENSIONS, output_format="html")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
    )
    return NO_SOURCE_IMG.sub("", clean)  # an image whose source was removed shows nothing
