"""The admin shows report markdown as sanitised HTML: tables and headings rendered, scripts, event
handlers, javascript: links and foreign images removed, the report's own figures linked to the
staff-only figure view."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from classifier.reports.markdown import render_markdown
from classifier.reports.services import evaluation_report_import
from tests.classifier.factories import UserFactory

CHANGELIST = "/admin/classifier/evaluationreport/"

HOSTILE = """# Ablations

| run | accuracy |
|---|---|
| no augment | 81.0% |

<script>alert("x")</script><img src=x onerror="alert(1)"><a href="javascript:alert(2)">js</a>
<div style="position:fixed" onclick="alert(3)">overlay</div> [docs](https://example.com/a)

![cm](confusion_matrix.png) ![tracker](https://evil.example/pixel.gif)
"""


def test_render_markdown_keeps_structure_and_drops_active_content():
    out = render_markdown(HOSTILE, image_urls={"confusion_matrix.png": "/figures/cm.png"})
    assert "<h1>Ablations</h1>" in out
    assert re.search(r"<td>no augment</td>\s*<td>81.0%</td>", out)
    for bad in ("<script", "onerror", "onclick", "javascript:", "style=", "evil.example", "<div"):
        assert bad not in out, bad
    assert '<img src="/figures/cm.png" alt="cm">' in out or '<img alt="cm" src="/figures/cm.png">' in out
    assert 'href="https://example.com/a"' in out and 'rel="noopener noreferrer"' in out


@pytest.mark.django_db
def test_admin_report_page_renders_markdown_documents(media_root, reported_bundle):
    client = Client()
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    report = evaluation_report_import(bundle_dir=reported_bundle)
    page = client.get(f"{CHANGELIST}{report.id}/change/").content.decode()
    # ablations.md is a table in the page, not just text in a <pre>
    markdown_blocks = re.findall(r'<div class="report-markdown">(.*?)</div>', page, re.S)
    assert len(markdown_blocks) == 2  # report.md and ablations.md; training-log.txt stays plain
    assert any(re.search(r"<td>no augment</td>\s*<td>81.0%</td>", block) for block in markdown_blocks)
    assert '<pre class="report-text report-text-wide">epoch 1 | val acc 0.40' in page
