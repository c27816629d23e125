"""What the console's browser tests share: Debian's Chromium (`make tools`; Playwright's own browser
download is never used), its flags, and axe-core (vendored into tests/ui/vendor with its licence,
injected through the debugging protocol — not an inline script, so the console's CSP is not touched).
The walks themselves: tests/ui/test_browser_journey.py (the whole journey) and test_approvals_page.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ARGS", "AXE", "CHROMIUM", "accessibility_problems"]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"


def accessibility_problems(page: Any) -> list[str]:
    """Serious and critical axe-core findings on ``page`` as it stands."""
    page.evaluate(AXE.read_text())
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
