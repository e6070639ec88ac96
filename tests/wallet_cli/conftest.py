"""Reuse the functional framework's ``network`` fixture (real ``pouw-node`` processes, logs kept on failure)."""

from tests.functional.conftest import network, pytest_runtest_makereport  # noqa: F401
