"""Shared pytest configuration: hypothesis profiles and the CUDA skip marker."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Tiny matmuls stall badly when two torch threads share two busy cores: tests run single-threaded,
# as the miner and the node do.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency
    pass

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA device on this machine")
