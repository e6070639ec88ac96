"""Exact int8 x int8 -> int32 matrix products on each kind of device the engine runs on.

Every backend is exact; they differ only in speed, so a node picks the fastest one it has:

* ``float32`` (CPU): a float32 GEMM, exact because every partial sum is an integer of magnitude at
  most ``128 * 128 * 1024 = 2**24`` when the inner dimension is consumed in pieces of at most
  :data:`FLOAT32_MAX_K` (longer products are split and the pieces summed in int32);
* ``float64`` (CPU): a float64 GEMM, exact below ``2**53`` (any width this protocol allows);
* ``int_mm`` (CPU or CUDA): ``torch._int_mm``, after a self-test on this machine shows it exact.
  On CUDA it runs on the tensor cores and is the only choice; on a CPU it is fast only with
  VNNI/AMX (on an AVX2-only CPU it is a naive loop, 50-100x slower than MKL's float32 GEMM);
* ``reference``: numpy int64, slow and independent of torch's kernels: the cross-check.

``get_backend("cpu")`` times the exact CPU candidates on a short calibration product and keeps
the fastest (:func:`calibrate_cpu`); ``POUW_CPU_BACKEND=float32|float64|int_mm`` or the name
``cpu:<kind>`` overrides it. Miners and validators call the same function, so both get the fast
path. Elementwise work never lives here: the engine writes it once in torch integer ops.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from chain.errors import Reason, ValidationError

log = logging.getLogger(__name__)

FLOAT32_MAX_K = 1024
"""Longest inner dimension of one float32 GEMM: ``128 * 128 * 1024 = 2**24`` is exact in float32."""
CPU_KINDS = ("float32", "float64", "int_mm")
BACKEND_ENV = "POUW_CPU_BACKEND"
CALIBRATION_SHAPE = (256, 256, 256)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.int32: np.int32, torch.int64: np.int64}


def host_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor in numpy-allocated memory. torch's CPU allocator hands large
    blocks back to the OS on free, so every fresh multi-MB tensor pays its page faults again (~4 ms
    for 16 MB, a fifth of a 2048² float32 GEMM's conversions); numpy's keeps them (and asks for huge
    pages), so the per-matmul buffers of the CPU paths come from here."""
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype]))


def host_copy(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)`` (contiguous) into a :func:`host_empty` buffer."""
    return host_empty(tuple(x.shape), dtype).copy_(x)


def check_operands(a: torch.Tensor, b: torch.Tensor) -> None:
    """Raise unless ``a`` (m, k) and ``b`` (k, n) are int8 matrices with matching ``k``."""
    if a.dtype != torch.int8 or b.dtype != torch.int8 or a.dim() != 2 or b.dim() != 2:
        raise ValidationError(Reason.WRONG_TYPE, "int_mm takes two int8 matrices")
    if a.shape[1] != b.shape[0]:
        raise ValidationError(Reason.OUT_OF_RANGE, f"int_mm shapes {tuple(a.shape)} @ {tuple(b.shape)}")


class Backend:
    """A device plus an exact integer matmul for it.

    ``compute_dtype`` is the dtype its GEMM runs in; :meth:`chunk_mm` multiplies operands already
    converted to it (by :meth:`prepare`) with an inner dimension of at most ``max_chunk``, and
    returns the exact product in a dtype that holds it (the transcript kernels call this once per
    chunk, so the conversion is paid once per operand, not once per chunk).
    """

    name: str
    kind: str
    device: torch.device
    compute_dtype: torch.dtype = torch.int8
    max_chunk: int = 1 << 30
    fusable: bool = False  # the fused CPU transcript kernel may call chunk_mm (CPU tensors)
    calibration: dict[str, float] | None = None

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` for int8 ``a`` (m, k) and ``b`` (k, n) on ``device``, exactly, as int32 (m, n)."""
        raise NotImplementedError

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """An int8 operand in the dtype :meth:`chunk_mm` takes."""
        return x.to(self.compute_dtype).contiguous()

    def chunk_mm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The exact product of prepared operands whose inner dimension is at most ``max_chunk``,
        written into ``out`` when given (a preallocated buffer of :attr:`chunk_dtype`: the fused
        kernel reuses one per row block, and a fresh page-faulted allocation per chunk costs as much
        as a third of the GEMM itself)."""
        raise NotImplementedError

    @property
    def chunk_dtype(self) -> torch.dtype:
        """The dtype :meth:`chunk_mm` returns (and takes as ``out``)."""
        return self.compute_dtype

    @property
    def label(self) -> str:
        """What a log line or a status page shows: device, GEMM kind, and calibration times."""
        text = f"{self.name} ({self.kind})"
        if self.calibration:
            times = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in sorted(self.calibration.items(), key=lambda x: x[1]))
            text += f" [calibrated {CALIBRATION_SHAPE[0]}^3: {times}]"
        return text

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.kind}>"


class TorchIntMM(Backend):
    """``torch._int_mm`` on a CPU or a CUDA device."""

    kind = "int_mm"
    compute_dtype = torch.int8

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.fusable = device.type == "cpu"

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        return torch._int_mm(a.contiguous(), b.contiguous())

    def chunk_mm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return torch._int_mm(a.contiguous(), b.contiguous())
        return torch._int_mm(a.contiguous(), b.contiguous(), out=out)

    @property
    def chunk_dtype(self) -> torch.dtype:
        return torch.int32


class CpuFloatGemm(Backend):
    """A float GEMM on the CPU that is exact for these integer operands (subclasses say why); the
    fused transcript kernel takes its chunk products in the compute dtype."""

    fusable = True

    def __init__(self, name: str = "cpu") -> None:
        self.name = name
        self.device = torch.device("cpu")

    def chunk_mm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return a @ b
        return torch.mm(a, b, out=out)


def _max_abs(x: torch.Tensor) -> int:
    low, high = torch.aminmax(x)
    return max(-int(low), int(high))


class Float32Gemm(CpuFloatGemm):
    """Exact float32 GEMM on the CPU: one GEMM while ``k·max|a|·max|b| <= 2**24`` (payload operands,
    |v| <= 63, up to k = 4227), else the inner dimension in pieces of at most 1024."""

    kind = "float32"
    compute_dtype = torch.float32
    max_chunk = FLOAT32_MAX_K

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        fa, fb = host_copy(a, torch.float32), host_copy(b, torch.float32)
        k = a.shape[1]
        if k <= FLOAT32_MAX_K or k * _max_abs(a) * _max_abs(b) <= 1 << 24:
            product = torch.mm(fa, fb, out=host_empty((a.shape[0], b.shape[1]), torch.float32))
            return host_copy(product, torch.int32)  # every partial sum is at most k·max|a|·max|b|
        out = torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int32)
        for start in range(0, k, FLOAT32_MAX_K):
            stop = min(start + FLOAT32_MAX_K, k)
            out += (fa[:, start:stop] @ fb[start:stop]).to(torch.int32)
        return out


class Float64Gemm(CpuFloatGemm):
    """Exact float64 GEMM on the CPU (every partial sum is an integer below 2**53)."""

    kind = "float64"
    compute_dtype = torch.float64

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


class ReferenceBackend(Backend):
    """numpy int64 products: slow, and sharing no kernel with the torch backends."""

    kind = "numpy-int64"
    compute_dtype = torch.int64

    def __init__(self) -> None:
        self.name = "reference"
        self.device = torch.device("cpu")

    def int_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        check_operands(a, b)
        product = a.numpy().astype(np.int64) @ b.numpy().astype(np.int64)
        return torch.from_numpy(product.astype(np.int32))

    def chunk_mm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        product = torch.from_numpy(a.numpy() @ b.numpy())
        if out is None:
            return product
        return out.copy_(product)


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


def _cpu_backend(kind: str, name: str) -> Backend:
    if kind == "float32":
        return Float32Gemm(name)
    if kind == "float64":
        return Float64Gemm(name)
    if kind == "int_mm":
        if not _int_mm_is_exact(torch.device("cpu")):
            raise ValidationError(Reason.BACKEND_UNAVAILABLE, "_int_mm is not exact on this CPU")
        return TorchIntMM(name, torch.device("cpu"))
    raise ValidationError(Reason.BACKEND_UNAVAILABLE, f"unknown CPU backend kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Calibration:
    """Best seconds of one calibration product per exact CPU candidate, and the winner."""

    seconds: dict[str, float]
    fastest: str


def calibrate_cpu(shape: tuple[int, int, int] = CALIBRATION_SHAPE, repeats: int = 5) -> Calibration:
    """Time each exact CPU candidate on a ``shape`` product, under the current torch thread count
    (set it first), keeping the best of ``repeats`` runs: on a shared machine the slow runs are
    other processes' noise. A few ms in all, up to ~0.3 s where ``_int_mm`` is a naive loop."""
    m, k, n = shape
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.integers(-127, 128, size=(m, k), dtype=np.int8))
    b = torch.from_numpy(rng.integers(-127, 128, size=(k, n), dtype=np.int8))
    seconds: dict[str, float] = {}
    for kind in CPU_KINDS:
        try:
            backend = _cpu_backend(kind, "cpu")
        except ValidationError:
            continue
        backend.int_mm(a, b)  # warm-up: first calls pay one-off allocations and dispatch
        runs: list[float] = []
        for _ in range(repeats):
            start = time.perf_counter()
            backend.int_mm(a, b)
            runs.append(time.perf_counter() - start)
        seconds[kind] = min(runs)
    fastest = min(seconds, key=lambda kind: seconds[kind])
    return Calibration(seconds, fastest)


@functools.cache
def get_backend(name: str) -> Backend:
    """The backend called ``name``: ``cpu`` (the fastest exact one, or ``$POUW_CPU_BACKEND``),
    ``cpu:float32``, ``cpu:float64``, ``cpu:int_mm``, ``cuda``, ``cuda:N`` or ``reference``."""
    if name == "reference":
        return ReferenceBackend()
    if name == "cpu":
        forced = os.environ.get(BACKEND_ENV, "")
        if forced:
            if forced not in CPU_KINDS:
                raise ValidationError(Reason.BACKEND_UNAVAILABLE, f"{BACKEND_ENV}={forced!r} is not one of {CPU_KINDS}")
            return _cpu_backend(forced, "cpu")
        calibration = calibrate_cpu()
        backend = _cpu_backend(calibration.fastest, "cpu")
        backend.calibration = calibration.seconds
        log.info("CPU matmul backend: %s", backend.label)
        return backend
    if name.startswith("cpu:"):
        return _cpu_backend(name.removeprefix("cpu:"), name)
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
