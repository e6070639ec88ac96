"""Backends: exact int8 products on every device, typed errors for the ones that are not there."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from chain.errors import Reason, ValidationError
from pouw.backends import Float64Gemm, get_backend
from tests.conftest import cuda_available, requires_cuda

SHAPES = [(64, 64, 64), (64, 128, 192), (192, 64, 128), (256, 512, 64)]


def _operands(m: int, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(-63, 64, size=(m, k), dtype=np.int8)
    b = rng.integers(-63, 64, size=(k, n), dtype=np.int8)
    a[0], b[:, 0] = 63, 63  # the extreme sums of a row times a column
    a[1], b[:, 1] = -63, 63
    return a, b


@pytest.mark.parametrize("name", ["cpu", "reference"])
@pytest.mark.parametrize("shape", SHAPES)
def test_int_mm_is_exact(name: str, shape: tuple[int, int, int]) -> None:
    backend = get_backend(name)
    a, b = _operands(*shape, seed=sum(shape))
    got = backend.int_mm(torch.from_numpy(a), torch.from_numpy(b))
    assert got.dtype == torch.int32 and got.device == backend.device
    assert np.array_equal(got.numpy(), a.astype(np.int64) @ b.astype(np.int64))


def test_float64_fallback_is_exact_at_the_largest_width() -> None:
    a = torch.full((64, 8192), -63, dtype=torch.int8)
    b = torch.full((8192, 64), 63, dtype=torch.int8)
    assert int(Float64Gemm().int_mm(a, b)[0, 0]) == -63 * 63 * 8192


def test_int_mm_rejects_bad_operands() -> None:
    cpu = get_backend("cpu")
    with pytest.raises(ValidationError):
        cpu.int_mm(torch.zeros(64, 64, dtype=torch.int32), torch.zeros(64, 64, dtype=torch.int8))
    with pytest.raises(ValidationError):
        cpu.int_mm(torch.zeros(64, 64, dtype=torch.int8), torch.zeros(128, 64, dtype=torch.int8))


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:01", "cuda:-1", "cuda:\u0661", "", "CPU"])
def test_unknown_backends_are_typed_errors(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        get_backend(name)
    assert err.value.reason is Reason.BACKEND_UNAVAILABLE


@pytest.mark.skipif(cuda_available(), reason="a CUDA device is present")
def test_missing_cuda_is_a_typed_error() -> None:
    with pytest.raises(ValidationError) as err:
        get_backend("cuda")
    assert err.value.reason is Reason.BACKEND_UNAVAILABLE


def test_backends_are_shared() -> None:
    assert get_backend("cpu") is get_backend("cpu")
    assert get_backend("cpu").name == "cpu"


@requires_cuda
@pytest.mark.parametrize("shape", [*SHAPES, (1024, 4096, 1024)])
def test_cuda_int_mm_matches_cpu(shape: tuple[int, int, int]) -> None:
    cuda = get_backend("cuda")
    a, b = _operands(*shape, seed=7)
    got = cuda.int_mm(torch.from_numpy(a).to(cuda.device), torch.from_numpy(b).to(cuda.device))
    assert got.dtype == torch.int32
    assert np.array_equal(got.cpu().numpy(), a.astype(np.int64) @ b.astype(np.int64))
    assert get_backend("cuda:0") is not None


@pytest.mark.parametrize("kind", ["float32", "float64", "int_mm"])
@pytest.mark.parametrize("k", [64, 1024, 1088, 4096])
def test_every_cpu_kind_is_exact_at_the_int8_extremes(kind: str, k: int) -> None:
    """float32 splits k into pieces of 1024: 128·128·1024 = 2**24 is its exact limit."""
    backend = get_backend(f"cpu:{kind}")
    a = torch.full((32, k), -128, dtype=torch.int8)
    b = torch.full((k, 32), -128, dtype=torch.int8)
    a[1], b[:, 1] = 127, -128
    got = backend.int_mm(a, b)
    want = a.to(torch.int64) @ b.to(torch.int64)
    assert got.dtype == torch.int32 and torch.equal(got.to(torch.int64), want)
    assert int(got[0, 0]) == 128 * 128 * k


def test_calibration_times_every_exact_kind_and_keeps_the_fastest() -> None:
    from pouw.backends import CPU_KINDS, calibrate_cpu

    result = calibrate_cpu(shape=(64, 64, 64), repeats=2)
    assert set(result.seconds) <= set(CPU_KINDS) and {"float32", "float64"} <= set(result.seconds)
    assert result.seconds[result.fastest] == min(result.seconds.values())
    assert get_backend("cpu").kind in CPU_KINDS
    assert "calibrated" in get_backend("cpu").label or os.environ.get("POUW_CPU_BACKEND")


def test_the_env_override_and_explicit_names_pick_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from pouw.backends import Float32Gemm, _cpu_backend

    assert isinstance(get_backend("cpu:float32"), Float32Gemm)
    assert get_backend("cpu:float64").kind == "float64"
    with pytest.raises(ValidationError):
        get_backend("cpu:float16")
    monkeypatch.setenv("POUW_CPU_BACKEND", "float64")
    get_backend.cache_clear()
    try:
        assert get_backend("cpu").kind == "float64"
        monkeypatch.setenv("POUW_CPU_BACKEND", "bogus")
        get_backend.cache_clear()
        with pytest.raises(ValidationError):
            get_backend("cpu")
    finally:
        monkeypatch.delenv("POUW_CPU_BACKEND")
        get_backend.cache_clear()
    assert _cpu_backend("float32", "x").name == "x"
