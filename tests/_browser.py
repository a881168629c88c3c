"""Headless Chromium for the HTML report tests: where it is, how it is launched, and a
report opened in a page that collects its console errors, dialogs and network requests.
The ``browser`` fixture (``conftest.py``) skips cleanly when Chromium or playwright is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium() -> str | None:
    for c in (os.environ.get("QKV_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if c and Path(c).is_file():
            return c
    return None


class Page:
    """A report opened in a fresh page, with its console errors and dialogs collected."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems: list[str] = []
        self.page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"{m.type}: {m.text}"),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on(
            "dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss())
        )
        self.page.on(
            "request",
            lambda r: (
                r.url.startswith(("http", "ws")) and self.problems.append(f"network: {r.url}")
            ),
        )
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=20_000)

    def edges(self) -> str:
        return self.page.inner_html("#headview .edges")

    def heatmap(self) -> str:
        return self.page.eval_on_selector("#heatmap", "c => c.toDataURL()")

    def close(self) -> None:
        self.page.close()
