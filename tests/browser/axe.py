"""axe-core (vendored, tests/browser/vendor/axe.min.js) run inside the page under test.

The script is injected through WebDriver, so the site's CSP (script-src 'self') is untouched and
the application never serves it. ``serious_violations`` returns the violations of impact
"serious" or "critical" as short readable strings.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

AXE_JS = Path(__file__).parent / "vendor" / "axe.min.js"
BLOCKING = ("serious", "critical")


@cache
def _source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


def run_axe(browser) -> dict:
    if not browser.execute_script("return !!window.axe"):
        browser.execute_script(_source())
    browser.set_script_timeout(60)
    return browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(function (r) { done({violations: r.violations, url: r.url}); })"
        ".catch(function (e) { done({error: String(e)}); });"
    )


def serious_violations(browser) -> list[str]:
    result = run_axe(browser)
    assert "error" not in result, result.get("error")
    found = []
    for violation in result["violations"]:
        if violation.get("impact") in BLOCKING:
            targets = [", ".join(node["target"]) for node in violation["nodes"][:5]]
            summary = (violation["nodes"][0].get("failureSummary") or "").replace("\n", " ")[:300]
            found.append(f"{violation['impact']} {violation['id']}: {violation['help']} at {targets} ({summary})")
    return found
