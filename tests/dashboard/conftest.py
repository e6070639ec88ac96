"""Fixtures of the dashboard tests: the functional framework's ``network`` and a headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dashboard.browser import Browser, find_browser
from tests.functional.conftest import network, pytest_runtest_makereport  # noqa: F401


@pytest.fixture
def browser() -> Iterator[Browser]:
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(f"dashboard browser test needs a browser: {found}")
    session = Browser(*found)
    try:
        yield session
    finally:
        session.close()
