"""Where the browser tests find a Chromium (never downloaded: Debian's package, or CHROMIUM)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def find_chromium() -> str | None:
    """CHROMIUM if set (a path), else the first Chromium on PATH."""
    chosen = os.environ.get("CHROMIUM", "")
    if chosen:
        return chosen if Path(chosen).is_file() and os.access(chosen, os.X_OK) else None
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def playwright_missing() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"the playwright package is not installed ({error})"
    return ""


def why_skipped() -> str:
    """Empty when the browser tests can run, else the plain reason they are skipped."""
    if not find_chromium():
        return (
            "no Chromium found: browser tests skipped (install Debian's chromium package, "
            "`apt-get install chromium`, or set CHROMIUM=/path/to/chromium)"
        )
    missing = playwright_missing()
    return f"browser tests skipped: {missing}" if missing else ""
