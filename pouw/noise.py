"""Low-rank noise of the noisy-transcript product, drawn from a matmul's seed σ_m.

For a product A (m×k) · B (k×n) the noise is E = E_L·E_R (m×k) and F = F_L·F_R (k×n), of rank r:

* E_L (m×r) has entries ±1;
* E_R (r×k) is ternary: column j is zero except on a cyclic window of ``s = min(r, 64)`` rows
  starting at a drawn offset, where its entries are ±1. So each entry of E is a sum of exactly s
  terms ±1 and |E| <= s <= 64; with payload |A| <= 63, |A+E| <= 127 fits int8 whatever r is;
* F is built the same way transposed: F^T = G_L·G_R with G_L (n×r) ±1 and G_R (r×k) windowed,
  i.e. F_L = G_R^T (k×r, s non-zeros per row) and F_R = G_L^T (r×n, entries ±1).

Draw order (normative): E comes from ``Prng("pouw/noise", σ_m, 0)``: first the sign bits of E_L,
then the windows of E_R; F from ``Prng("pouw/noise", σ_m, 1)``: the sign bits of G_L, then the
windows of G_R. A sign matrix (rows×cols) takes ceil(rows·cols/8) bytes, bits little-endian within
each byte, row-major; bit 1 means -1. A window matrix (r×cols) takes ``randbelow_array(r, cols)``
offsets, then a sign matrix (cols×s) whose row j gives the signs of column j's window, entry i
landing on row (offset_j + i) mod r.

The draw also keeps what it read in compact form (:class:`CompactNoise`: each window's offset and
sign masks, and E_Lᵀ), from which the CPU kernels build A+E and B+F with about ``s/4`` int8 adds
of signed four-row groups per row. :meth:`NoiseFactors.dense` builds E and F as int8 without a
GEMM: each row of Eᵀ (and of F) is the signed sum of the ``s`` rows of E_Lᵀ (of F_R) its window
selects, ``s`` int16 vector adds (pouw/kernels/cpu.py), which costs ``s/r`` of the dense product
and no float conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from pouw.kernels.cpu import factor_pair, scatter_windows, sparse_rows, transpose_int8
from pouw.params import NOISE_BOUND
from pouw.prng import Prng

I8 = npt.NDArray[np.int8]


def draw_signs(prng: Prng, rows: int, cols: int) -> I8:
    """A rows×cols matrix of ±1 from the next ceil(rows·cols/8) bytes of ``prng``."""
    count = rows * cols
    raw = np.frombuffer(prng.bytes((count + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:count].astype(np.int8)
    return (1 - 2 * bits).reshape(rows, cols)


def draw_windows(prng: Prng, rank: int, cols: int, nonzeros: int) -> I8:
    """A rank×cols ternary matrix: each column ±1 on a cyclic window of ``nonzeros`` rows."""
    if not 1 <= nonzeros <= min(rank, NOISE_BOUND):
        raise ValueError(f"window of {nonzeros} rows does not fit rank {rank} and bound {NOISE_BOUND}")
    offsets = prng.randbelow_array(rank, cols)
    signs = draw_signs(prng, cols, nonzeros)
    return scatter_windows(offsets, signs, rank)  # column j: signs[j, i] at row (offsets[j] + i) mod r


def exact_matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Integer product through float64 GEMM, as int64: exact while every partial sum stays below
    2**53, which the bounds of this module guarantee for any width below 2**30."""
    return (x.to(torch.float64) @ y.to(torch.float64)).to(torch.int64)


@dataclass(frozen=True, slots=True)
class Windows:
    """A windowed factor in compact form: column ``c`` of E_R (row ``c`` of F_L) is ±1 on rows
    ``(offsets[c] + i) mod r``, ``i < s``, and 0 elsewhere; entry ``i`` is −1 where
    ``masks[c, i]`` is −1 and +1 where it is 0 (the mask negates by ``(x ^ mask) − mask``)."""

    offsets: npt.NDArray[np.int64]  # (cols,), in [0, r)
    masks: npt.NDArray[np.int8]  # (cols, s), 0 or -1

    def dense(self, rank: int, transposed: bool = False) -> I8:
        """The r×cols window matrix (its cols×r transpose, contiguous, if ``transposed``)."""
        return scatter_windows(self.offsets, (1 + 2 * self.masks).astype(np.int8), rank, transposed)


@dataclass(frozen=True, slots=True)
class CompactNoise:
    """What the CPU window kernels read instead of the dense factors: E_Lᵀ (r×m, contiguous) and
    the windows of E_R and of G_R (F_L = G_Rᵀ); F_R = G_Lᵀ is already the rows they add."""

    e_left_t: npt.NDArray[np.int8]
    e_windows: Windows
    f_windows: Windows


class NoiseFactors:
    """The four int8 factors of one matmul's noise; E = e_left·e_right, F = f_left·f_right, and,
    as :func:`draw_noise` leaves them on the CPU, the same noise in the compact form of
    :class:`CompactNoise` (dropped by :meth:`to` another device). Given the compact form, E_L and
    the two windowed factors may be left out (None): they are built from it when first asked for
    (the float32 CPU path reads only the compact form; the dense matrices cost ~0.03 ms a factor at
    512², 1 % of a mined step of the 512-wide job)."""

    __slots__ = ("_e_left", "_e_right", "_f_left", "compact", "f_right")

    def __init__(
        self,
        e_left: torch.Tensor | None,  # m × r, ±1
        e_right: torch.Tensor | None,  # r × k, windowed ternary
        f_left: torch.Tensor | None,  # k × r, windowed ternary (rows)
        f_right: torch.Tensor,  # r × n, ±1
        compact: CompactNoise | None = None,
    ) -> None:
        if compact is None and (e_left is None or e_right is None or f_left is None):
            raise ValueError("a factor left out needs the compact form to be built from")
        self.f_right = f_right
        self.compact = compact
        self._e_left = e_left
        self._e_right = e_right
        self._f_left = f_left

    @property
    def e_left(self) -> torch.Tensor:
        if self._e_left is None:
            self._e_left = torch.from_numpy(transpose_int8(self._compact_form().e_left_t))
        return self._e_left

    @property
    def e_right(self) -> torch.Tensor:
        if self._e_right is None:
            self._e_right = torch.from_numpy(self._compact_form().e_windows.dense(self.rank))
        return self._e_right

    @property
    def f_left(self) -> torch.Tensor:
        if self._f_left is None:
            self._f_left = torch.from_numpy(self._compact_form().f_windows.dense(self.rank, transposed=True))
        return self._f_left

    def _compact_form(self) -> CompactNoise:
        if self.compact is None:  # the constructor refuses this; kept typed rather than asserted
            raise ValueError("a windowed factor left out without the compact form to build it from")
        return self.compact

    @property
    def rank(self) -> int:
        return int(self.f_right.shape[0])

    def to(self, device: torch.device) -> NoiseFactors:
        if device.type == "cpu" and self.f_right.device.type == "cpu":
            return self
        return NoiseFactors(self.e_left.to(device), self.e_right.to(device), self.f_left.to(device),
                            self.f_right.to(device))

    def e(self, rows: slice = slice(None)) -> torch.Tensor:
        """E (or the given rows of it), int64."""
        return exact_matmul(self.e_left[rows], self.e_right)

    def f(self, cols: slice = slice(None)) -> torch.Tensor:
        """F (or the given columns of it), int64."""
        return exact_matmul(self.f_left, self.f_right[:, cols])

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, F) in full as int8 CPU tensors, from the sparse windows (equal to :meth:`e`, :meth:`f`)."""
        e_left, e_right = self.e_left.cpu().numpy(), self.e_right.cpu().numpy()
        f_left, f_right = self.f_left.cpu().numpy(), self.f_right.cpu().numpy()
        e_t = sparse_rows(np.ascontiguousarray(e_right.T), np.ascontiguousarray(e_left.T))  # k × m
        f = sparse_rows(f_left, f_right)  # k × n
        return torch.from_numpy(e_t).T, torch.from_numpy(f)


def _signs(raw: bytes, rows: int, cols: int) -> I8:
    """``draw_signs`` of bytes already read."""
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=rows * cols, bitorder="little").view(np.int8)
    return (1 - 2 * bits).reshape(rows, cols)


def _draw_factor_pair(prng: Prng, rows: int, rank: int, cols: int, nonzeros: int) -> tuple[I8, Windows]:
    """The transpose (r×rows, contiguous) of ``draw_signs(prng, rows, rank)`` and
    ``draw_windows(prng, rank, cols, nonzeros)`` in compact form (:meth:`Windows.dense` gives the
    matrix): E_Lᵀ and E_R's windows, or F_R and F_L's (:func:`draw_noise`).

    For a power-of-two rank no 64-bit word is ever rejected by ``randbelow(rank)`` (rank divides
    2**64), so the draw is exactly the next ``ceil(rows·rank/8) + 8·cols + ceil(cols·nonzeros/8)``
    bytes of the stream: read them in one piece (the same bytes, the same values, fewer calls)."""
    if not 1 <= nonzeros <= min(rank, NOISE_BOUND):
        raise ValueError(f"window of {nonzeros} rows does not fit rank {rank} and bound {NOISE_BOUND}")
    if rank & (rank - 1):  # draw_signs, then draw_windows call by call (offsets by rejection)
        left = draw_signs(prng, rows, rank)
        offsets = prng.randbelow_array(rank, cols)
        masks = -(draw_signs(prng, cols, nonzeros) < 0).astype(np.int8)
        return transpose_int8(left), Windows(offsets, masks)

    sign_bytes, window_bytes = (rows * rank + 7) // 8, (cols * nonzeros + 7) // 8
    raw = prng.bytes(sign_bytes + 8 * cols + window_bytes)
    fast = factor_pair(raw, rows, rank, cols, nonzeros)  # numba: the same bits
    if fast is not None:
        signs_t, offsets, masks = fast
        return signs_t, Windows(offsets, masks)
    left = _signs(raw[:sign_bytes], rows, rank)
    words = np.frombuffer(raw, dtype="<u8", count=cols, offset=sign_bytes)
    offsets = (words & np.uint64(rank - 1)).astype(np.int64)
    masks = -(_signs(raw[sign_bytes + 8 * cols :], cols, nonzeros) < 0).astype(np.int8)
    return transpose_int8(left), Windows(offsets, masks)


def draw_noise(sigma_m: bytes, m: int, k: int, n: int, rank: int) -> NoiseFactors:
    """The noise factors (on the CPU) of a product A (m×k)·B (k×n) seeded by σ_m."""
    nonzeros = min(rank, NOISE_BOUND)
    # the signs as drawn transposed: E_L itself is only built if asked for (NoiseFactors.e_left)
    e_left_t, e_windows = _draw_factor_pair(Prng("pouw/noise", sigma_m, 0), m, rank, k, nonzeros)
    f_right, f_windows = _draw_factor_pair(Prng("pouw/noise", sigma_m, 1), n, rank, k, nonzeros)
    compact = CompactNoise(e_left_t, e_windows, f_windows)
    return NoiseFactors(None, None, None, torch.from_numpy(f_right), compact)
