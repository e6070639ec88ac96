"""Headless Chromium for the dashboard tests, driven by Selenium through Debian's chromedriver.

:func:`find_browser` locates ``chromium`` and ``chromedriver`` (the ``chromium`` and
``chromium-driver`` packages); :class:`Browser` wraps the WebDriver with what the tests need: open
a page, wait for an element or a condition, read text, and save a full-page screenshot.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.functional.framework import REPO, TIMEOUT_FACTOR, wait_until

SCREENSHOTS = REPO / "benchmarks" / "results" / "dashboard"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
)


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason the browser tests cannot run."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return "headless Chromium is not installed (apt-get install chromium chromium-driver)"
    return chromium, driver


class Browser:
    """One headless Chromium with a fresh profile; ``close()`` ends it and removes the profile."""

    def __init__(self, chromium: str, driver: str, width: int = 1440, height: int = 1000) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
        self.profile = Path(tempfile.mkdtemp(prefix="pouw-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        self.width = width
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.driver.set_page_load_timeout(60 * TIMEOUT_FACTOR)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
        """Poll ``predicate`` until it is truthy (errors, e.g. an element between two renders, count as
        not yet); fail after the timeout."""
        return wait_until(predicate, timeout, what, interval=0.1)

    def text(self, selector: str) -> str:
        """The text of the first element matching ``selector`` ('' when there is none)."""
        value = self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector)
        return str(value)

    def texts(self, selector: str) -> list[str]:
        return list(self.js("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);", selector))

    def wait_for(self, selector: str, timeout: float = 30) -> str:
        """Wait until an element matching ``selector`` exists; return its text."""
        self.wait(lambda: self.js("return document.querySelector(arguments[0]) !== null;", selector), timeout, selector)
        return self.text(selector)

    def script_errors(self) -> list[str]:
        """Messages the page's scripts logged as errors since the last call (failed fetches aside:
        a 404 the page handles is not a script error)."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e.get("level") == "SEVERE" and e.get("source") != "network"]

    def screenshot(self, name: str) -> Path:
        """A full-page PNG under benchmarks/results/dashboard/ (Chromium's DevTools capture, which
        renders beyond the window rather than resizing it)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = int(self.js("return Math.ceil(document.documentElement.scrollHeight);"))
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.width, "height": min(height, 8000), "scale": 1},
        })
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
