"""Fixtures shared by the node's in-process API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.api import make_app
from node.api_security import API_SECURITY
from node.chain_service import ChainService
from tests.node.harness import start_service


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, ChainService]]:  # type: ignore[type-arg]
    """A regtest chain service behind the HTTP API, and a test client carrying the API's cookie."""
    service = await start_service(tmp_path / "node")
    app = make_app(service, client_max_size=1 << 20)
    async with TestClient(TestServer(app), headers=app[API_SECURITY].client_headers()) as test_client:
        yield test_client, service
    await service.stop()


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[ChainService]:
    """A regtest chain service in a temporary datadir, stopped after the test."""
    service = await start_service(tmp_path / "node")
    yield service
    await service.stop()
