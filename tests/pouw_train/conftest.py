"""Training tests run torch single-threaded: with tiny products, a second thread on a busy 2-core
machine only adds stalls (a step can take 50x longer while the other thread waits for a core)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
