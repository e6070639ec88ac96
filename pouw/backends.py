"""Exact int8 x int8 -> int32 matrix products on each kind of device the engine runs on.

* ``cpu``: ``torch._int_mm`` when a self-test on this machine shows it exact, otherwise a float64
  GEMM (every partial sum is an integer below ``63 * 63 * 8192 < 2**53``, so it is exact too);
* ``cuda`` / ``cuda:N``: ``torch._int_mm`` on the tensor cores (it needs ``m > 16`` and ``k, n``
  multiples of 8, which the model's multiples of 64 satisfy; CUDA has no int64 matmul);
* ``reference``: numpy int64, slow and independent of torch's kernels: the cross-check.

Elementwise work never lives here: the engine writes it once in torch integer ops for every device.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import torch

from chain.errors import Reason, ValidationError


def check_operands(a: torch.Tensor, b: torch.Tensor) -> None:
    """Raise unless ``a`` (m, k) and ``b`` (k, n) are int8 matrices with matching ``k``."""
    if a.dtype != torch.int8 or b.dtype != torch.int8 or a.dim() != 2 or b.dim() != 2:
        raise ValidationError(Reason.WRONG_TYPE, "int_mm takes two int8 matrices")
    if a.shape[1] != b.shape[0]:
        raise ValidationError(Reason.OUT_OF_RANGE, f"int_mm shapes {tuple(a.shape)} @ {tuple(b.shape)}")


class Backend:
    """A device plus an exact integer matmul for it."""

    name: str
    device: torch.device

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` for int8 ``a`` (m, k) and ``b`` (k, n) on ``device``, exactly, as int32 (m, n)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"


class TorchIntMM(Backend):
    """``torch._int_mm`` on a CPU or a CUDA device."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        return torch._int_mm(a.contiguous(), b.contiguous())


class Float64Gemm(Backend):
    """Exact float64 GEMM on the CPU, for builds whose ``_int_mm`` is missing or wrong."""

    def __init__(self) -> None:
        self.name = "cpu"
        self.device = torch.device("cpu")

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


class ReferenceBackend(Backend):
    """numpy int64 products: slow, and sharing no kernel with the torch backends."""

    def __init__(self) -> None:
        self.name = "reference"
        self.device = torch.device("cpu")

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        product = a.numpy().astype(np.int64) @ b.numpy().astype(np.int64)
        return torch.from_numpy(product.astype(np.int32))


def _int_mm_is_exact(device: torch.device) -> bool:
    """Compare ``_int_mm`` with int64 numpy on extreme and mixed operands of the engine's shapes."""
    rng = np.random.default_rng(0)
    for m, k, n in ((64, 64, 64), (64, 192, 128), (128, 64, 192)):
        a = rng.integers(-63, 64, size=(m, k), dtype=np.int8)
        b = rng.integers(-63, 64, size=(k, n), dtype=np.int8)
        a[0, :], b[:, 0] = 63, 63
        a[1, :], b[:, 1] = -63, 63
        try:
            got = torch._int_mm(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device))
        except RuntimeError:
            return False
        want = a.astype(np.int64) @ b.astype(np.int64)
        if got.dtype != torch.int32 or not np.array_equal(got.cpu().numpy(), want):
            return False
    return True


@functools.cache
def get_backend(name: str) -> Backend:
    """The backend called ``name``: ``cpu``, ``cuda``, ``cuda:N`` or ``reference``."""
    if name == "reference":
        return ReferenceBackend()
    if name == "cpu":
        cpu = torch.device("cpu")
        return TorchIntMM("cpu", cpu) if _int_mm_is_exact(cpu) else Float64Gemm()
    if name == "cuda" or name.startswith("cuda:"):
        index = 0 if name == "cuda" else _device_index(name)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValidationError(Reason.BACKEND_UNAVAILABLE, f"no CUDA device {index}")
        device = torch.device("cuda", index)
        if not _int_mm_is_exact(device):
            raise ValidationError(Reason.BACKEND_UNAVAILABLE, f"_int_mm is not exact on {device}")
        return TorchIntMM(f"cuda:{index}", device)
    raise ValidationError(Reason.BACKEND_UNAVAILABLE, f"unknown backend {name!r}")


def _device_index(name: str) -> int:
    suffix = name.removeprefix("cuda:")
    if re.fullmatch(r"0|[1-9][0-9]{0,3}", suffix) is None:
        raise ValidationError(Reason.BACKEND_UNAVAILABLE, f"bad CUDA device name {name!r}")
    return int(suffix)
