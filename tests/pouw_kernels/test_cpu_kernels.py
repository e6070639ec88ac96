"""The fused CPU transcript kernel, the sparse noise and the fast denoise against the reference.

Every check is bit for bit: C', every ticket, E and F, and the denoised product. The pure
fallback (numba missing) is run in a subprocess with ``POUW_NO_NUMBA=1``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pouw.backends import get_backend
from pouw.kernels import cpu as kernels
from pouw.noise import draw_noise
from pouw.params import DEVNET, MAINNET, TESTNET, PouwParams
from pouw.transcript import denoise, denoise_fast, mix_weights, noisy_product

REFERENCE = get_backend("reference")
SEED = b"\x07" * 32


def operands(seed: int, m: int, k: int, n: int, bound: int = 63) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    a = rng.integers(-bound, bound + 1, size=(m, k), dtype=np.int8)
    b = rng.integers(-bound, bound + 1, size=(k, n), dtype=np.int8)
    a[0], b[:, 0] = bound, bound  # the extreme running sums
    return torch.from_numpy(a), torch.from_numpy(b)


CASES = [
    (DEVNET, 64, 64, 64),
    (DEVNET, 128, 320, 192),
    (TESTNET, 192, 448, 64),  # k not a multiple of t: a short last chunk
    (MAINNET, 64, 640, 128),
    (dataclasses.replace(DEVNET, rank=16, chunk=12, tile_m=4, tile_n=8), 64, 64, 64),
]


@pytest.mark.parametrize("kind", ["float32", "float64", "int_mm"])
@pytest.mark.parametrize(("params", "m", "k", "n"), CASES)
def test_fused_product_is_bit_identical_to_the_reference(kind: str, params: PouwParams, m: int, k: int, n: int) -> None:
    backend = get_backend(f"cpu:{kind}")
    a, b = operands(m + k + n, m, k, n)
    fused = noisy_product(params, SEED, 5, 2, a, b, backend.int_mm, backend)
    reference = noisy_product(params, SEED, 5, 2, a, b, REFERENCE.int_mm)
    assert fused.fused and not reference.fused
    assert fused.tickets == reference.tickets
    if fused.c_noisy is not None:  # None when A·B came from a plain product: the tickets cover C'
        assert torch.equal(fused.c_noisy.to(torch.int64), reference.c_noisy.to(torch.int64))
    else:
        assert kind == "float32" and fused.useful is not None
    want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert torch.equal(fused.exact(a), want) and torch.equal(reference.exact(a), want)


def test_fused_kernel_mixes_every_chunk_and_every_element() -> None:
    """Changing one operand entry changes the tickets of exactly the tiles it feeds."""
    backend = get_backend("cpu:float32")
    a, b = operands(3, 128, 256, 128)
    base = noisy_product(DEVNET, SEED, 0, 0, a, b, backend.int_mm, backend)
    a2 = a.clone()
    a2[70, 200] = 0 if int(a2[70, 200]) else 1  # row 70: tile row 1
    changed = noisy_product(DEVNET, SEED, 0, 0, a2, b, backend.int_mm, backend)
    assert base.sigma_m != changed.sigma_m  # HA moved, so every ticket moves; now hold σ_m fixed:
    noise = draw_noise(base.sigma_m, 128, 256, 128, DEVNET.rank)
    e, f = noise.dense()
    w = mix_weights(64, 64, torch.device("cpu")).numpy()
    one = kernels.fused_transcript((a + e).float(), (b + f).float(), DEVNET.chunk, torch.mm, w)[1]
    two = kernels.fused_transcript((a2 + e).float(), (b + f).float(), DEVNET.chunk, torch.mm, w)[1]
    differs = [bool((one[t] != two[t]).any()) for t in range(4)]
    assert differs == [False, False, True, True]


@pytest.mark.parametrize("rank", [1, 16, 64, 128, 256])
def test_sparse_noise_equals_the_dense_product(rank: int) -> None:
    noise = draw_noise(bytes([rank % 251]) * 32, 192, 256, 128, rank)
    e, f = noise.dense()
    assert e.dtype == torch.int8 and f.dtype == torch.int8
    assert torch.equal(e.to(torch.int64), noise.e()) and torch.equal(f.to(torch.int64), noise.f())


@pytest.mark.parametrize("k", [64, 512, 4096])
def test_fast_denoise_is_exact_in_float32_and_beyond(k: int) -> None:
    a, b = operands(k, 64, k, 64)
    noise = draw_noise(b"\x01" * 32, 64, k, 64, 256)
    e, f = noise.dense()
    b_noisy = b + f
    c_noisy = (a + e).to(torch.int64) @ b_noisy.to(torch.int64)
    want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert torch.equal(denoise_fast(c_noisy, a, b_noisy, noise), want)
    assert torch.equal(denoise_fast(c_noisy.to(torch.int32), a, b_noisy.float(), noise), want)
    assert torch.equal(denoise(c_noisy, a, b_noisy, noise), want)


def test_the_pure_fallback_gives_the_same_bits() -> None:
    code = (
        "import torch, numpy as np\n"
        "from pouw.kernels import cpu\n"
        "assert not cpu.HAVE_NUMBA\n"
        "from pouw.backends import get_backend\n"
        "from pouw.params import TESTNET\n"
        "from pouw.transcript import noisy_product\n"
        "rng = np.random.default_rng(9)\n"
        "a = torch.from_numpy(rng.integers(-63, 64, (128, 320), dtype=np.int8))\n"
        "b = torch.from_numpy(rng.integers(-63, 64, (320, 64), dtype=np.int8))\n"
        "be = get_backend('cpu:float32')\n"
        "p = noisy_product(TESTNET, b'\\x07' * 32, 1, 0, a, b, be.int_mm, be)\n"
        "assert p.fused and p.useful is not None\n"
        "assert torch.equal(p.exact(a), (a.long() @ b.long()).int())\n"
        "print(b''.join(p.tickets).hex())\n"
    )
    env = {**os.environ, "POUW_NO_NUMBA": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    rng = np.random.default_rng(9)
    a = torch.from_numpy(rng.integers(-63, 64, (128, 320), dtype=np.int8))
    b = torch.from_numpy(rng.integers(-63, 64, (320, 64), dtype=np.int8))
    reference = noisy_product(TESTNET, SEED, 1, 0, a, b, REFERENCE.int_mm)
    assert out.stdout.strip() == b"".join(reference.tickets).hex()


@pytest.mark.parametrize("k", [64, 512, 8192])
def test_int8_limb_denoise_is_exact(k: int) -> None:
    """The GPU path's denoise (int8 products only), run here with an exact int8 product."""
    from pouw.transcript import denoise_limbs, int8_limbs, limb_count

    x = torch.tensor([0, 1, -1, 63, -64, 64, -65, 127 * k, -127 * k, 97 * k + 5, -101 * k - 3], dtype=torch.int64)
    limbs = int8_limbs(x, limb_count(127 * k + 1))
    assert sum(limb.to(torch.int64) << (7 * j) for j, limb in enumerate(limbs)).tolist() == x.tolist()
    a, b = operands(k + 1, 64, k, 64)
    noise = draw_noise(b"\x02" * 32, 64, k, 64, 64)
    e, f = noise.dense()
    c_noisy = (a + e).to(torch.int64) @ (b + f).to(torch.int64)
    want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    counted = get_backend("cpu:float32").int_mm
    assert torch.equal(denoise_limbs(c_noisy, a, b + f, noise, counted), want)


@pytest.mark.parametrize(("rows", "block"), [(1, 1), (64, 64), (192, 64), (320, 16), (7, 4)])
def test_commitments_are_merkle_roots_over_row_blocks(rows: int, block: int) -> None:
    import blake3

    from chain.hashing import merkle_root_of_hashes
    from pouw.transcript import LEAF_KEY, block_roots, commit_rows

    data = np.random.default_rng(rows).integers(-63, 64, size=(rows, 96), dtype=np.int8)
    want = [blake3.blake3(data[i : i + block].tobytes(), key=LEAF_KEY).digest() for i in range(0, rows, block)]
    assert block_roots(data, block) == want
    assert commit_rows(data, block) == merkle_root_of_hashes(want)


def test_float32_accumulation_path_and_its_fallbacks_agree_with_the_reference() -> None:
    """The float32 path (running sums kept by the GEMM, denoise folded in) is taken when its
    Cauchy-Schwarz bound holds, and the int32 path when it does not; both match the reference."""
    backend = get_backend("cpu:float32")
    a, b = operands(11, 64, 320, 128)
    fast = noisy_product(TESTNET, SEED, 3, 1, a, b, backend.int_mm, backend)
    assert fast.useful is not None
    reference = noisy_product(TESTNET, SEED, 3, 1, a, b, REFERENCE.int_mm)
    assert fast.tickets == reference.tickets and torch.equal(fast.exact(a), reference.exact(a))
    assert fast.c_noisy is None  # A·B by a plain product here (n < 4r): C' is not kept, its lanes are
    # all-63 operands over k = 4224: max ‖a_i‖·‖b_j‖ >= 2**24, so the float32 accumulator is refused
    k = 4224
    a, b = torch.full((64, k), 63, dtype=torch.int8), torch.full((k, 64), 63, dtype=torch.int8)
    noise = draw_noise(b"\x03" * 32, 64, k, 64, DEVNET.rank)
    ops = kernels.noisy_operands(a, b, noise, DEVNET.chunk)
    assert not ops.float32_accumulation_exact()
    w = mix_weights(64, 64, torch.device("cpu")).numpy()
    assert kernels.fused_product(a, b, noise, DEVNET.chunk, w) is None
    wide = noisy_product(DEVNET, SEED, 0, 0, a, b, backend.int_mm, backend)
    assert wide.fused and wide.useful is None
    assert wide.tickets == noisy_product(DEVNET, SEED, 0, 0, a, b, REFERENCE.int_mm).tickets
    assert torch.equal(wide.exact(a), (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))


@pytest.mark.parametrize(
    ("chunk", "k", "rank"),
    [(12, 320, 128), (64, 320, 64), (100, 1100, 128), (64, 256, 256), (256, 1100, 256), (64, 1100, 64),
     (3, 1100, 3), (96, 1100, 100), (64, 1100, 130), (40, 1100, 6)],
)
def test_noisy_operands_equal_the_dense_noise(chunk: int, k: int, rank: int) -> None:
    """Both constructions (GEMMs for narrow products, the numba windows for wide or sparse ones); the
    windows' four-row groups with a window too short for one (s = 3), ranks that leave a partial
    group at the wrap (130, 6: those rows are added one by one), rejection-sampled ranks, and an
    inner width that is not a multiple of 8 (A's transpose entry by entry)."""
    a, b = operands(chunk, 128, k, 64)
    noise = draw_noise(b"\x04" * 32, 128, k, 64, rank)
    e, f = noise.dense()
    ops = kernels.noisy_operands(a, b, noise, chunk, rows=64)
    a_noisy = torch.cat([torch.cat(pieces, dim=1) for pieces in ops.a_pieces], dim=0)
    assert torch.equal(a_noisy, (a + e).to(torch.float32)) and torch.equal(ops.b, (b + f).to(torch.float32))
    if k > kernels.WIDTH_EXACT:
        assert ops.a_sumsq is not None and ops.b_sumsq is not None
        assert ops.a_sumsq.tolist() == ((a + e).to(torch.int64) ** 2).sum(1).tolist()
        assert ops.b_sumsq.tolist() == ((b + f).to(torch.int64) ** 2).sum(0).tolist()
    assert ops.float32_accumulation_exact()
    w = mix_weights(64, 64, torch.device("cpu")).numpy()
    fix = kernels.correction(a, ops.b, noise)
    if ops.a is not None:  # A+E kept whole (r <= 64): A·F_L from it, the same factors
        assert torch.equal(ops.a, (a + e).to(torch.float32))
        from_noisy = kernels.correction(a, ops.b, noise, ops.a)
        assert torch.equal(from_noisy.left, fix.left) and torch.equal(from_noisy.right, fix.right)
        assert from_noisy.bound == fix.bound
    c1, lanes1, useful = kernels.fused_float32(ops, chunk, w, fix)
    c2, lanes2, none = kernels.fused_float32(ops, chunk, w)
    dropped, lanes3, _ = kernels.fused_float32(ops, chunk, w, keep_noisy=False)
    assert none is None and c1 is not None and c2 is not None and torch.equal(c1, c2)
    assert torch.equal(c1.to(torch.int64), (a + e).to(torch.int64) @ (b + f).to(torch.int64))
    assert dropped is None and (lanes1 == lanes2).all() and (lanes1 == lanes3).all()
    assert useful is not None and torch.equal(useful, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))


@pytest.mark.parametrize("k", [4226, 4227, 4352])
def test_float32_plain_product_is_exact_across_its_single_gemm_limit(k: int) -> None:
    """One float32 GEMM while k·max|a|·max|b| <= 2**24 (63·63·4226 is the last payload width)."""
    a = torch.full((16, k), 63, dtype=torch.int8)
    b = torch.full((k, 16), 63, dtype=torch.int8)
    a[1], b[:, 1] = -63, 62
    got = get_backend("cpu:float32").int_mm(a, b)
    assert torch.equal(got.to(torch.int64), a.to(torch.int64) @ b.to(torch.int64))
    assert int(got[0, 0]) == 63 * 63 * k


@pytest.mark.parametrize("rank", [1, 2, 16, 48, 64, 100, 128, 256])
@pytest.mark.parametrize(("m", "k", "n"), [(64, 64, 128), (8, 3, 5)])
def test_one_read_noise_draw_equals_the_call_by_call_draw(rank: int, m: int, k: int, n: int) -> None:
    """draw_noise reads a power-of-two rank's bytes in one piece: the factors of the normative
    draw order (signs, then rejection-sampled window offsets, then window signs) all the same."""
    from pouw.noise import draw_signs, draw_windows
    from pouw.prng import Prng

    seed = bytes([rank % 256, m, k]) * 8 + b"\0" * 8
    got = draw_noise(seed, m, k, n, rank)
    nonzeros = min(rank, 64)
    streams = Prng("pouw/noise", seed, 0), Prng("pouw/noise", seed, 1)
    e_left, e_right = draw_signs(streams[0], m, rank), draw_windows(streams[0], rank, k, nonzeros)
    g_left, g_right = draw_signs(streams[1], n, rank), draw_windows(streams[1], rank, k, nonzeros)
    want = (e_left, e_right, g_right.T, g_left.T)
    for tensor, array in zip((got.e_left, got.e_right, got.f_left, got.f_right), want, strict=True):
        assert np.array_equal(tensor.numpy(), array)


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize("rank", [4, 48, 64, 100, 256])
def test_compact_windows_are_the_dense_factors(rank: int, numba: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window kernels read the draw's compact form (offsets, sign masks, E_Lᵀ): it must be the
    same noise as the dense factors, for one-read (power-of-two) and rejection-sampled ranks."""
    if not numba:
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    noise = draw_noise(bytes([rank % 256]) * 32, 64, 72, 128, rank)
    compact = noise.compact
    assert compact is not None
    assert np.array_equal(compact.e_left_t, noise.e_left.numpy().T) and compact.e_left_t.flags.c_contiguous
    for windows, dense in ((compact.e_windows, noise.e_right.numpy()), (compact.f_windows, noise.f_left.numpy().T)):
        rebuilt = np.zeros_like(dense)
        for c, (offset, masks) in enumerate(zip(windows.offsets, windows.masks, strict=True)):
            assert set(masks.tolist()) <= {0, -1}
            rebuilt[(offset + np.arange(len(masks))) % rank, c] = 1 + 2 * masks
        assert np.array_equal(rebuilt, dense)


def test_noisy_operands_without_numba_give_the_same_operands_and_norms(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = operands(5, 64, 1100, 64)
    noise = draw_noise(b"\x05" * 32, 64, 1100, 64, 64)
    fast = kernels.noisy_operands(a, b, noise, 100, rows=64)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    slow = kernels.noisy_operands(a, b, noise, 100, rows=64)
    assert torch.equal(fast.b, slow.b) and fast.product_bound() == slow.product_bound()
    assert fast.a_sumsq is not None and slow.a_sumsq is not None
    assert fast.a_sumsq.tolist() == slow.a_sumsq.tolist()
    for got, want in zip(fast.a_pieces[0], slow.a_pieces[0], strict=True):
        assert torch.equal(got, want)


def test_noisy_operands_refuse_operands_beyond_the_payload_bound() -> None:
    """The window kernels keep their running sums in int8 (exact for |x| <= 63 plus 64 terms ±1):
    an operand entry beyond ±63 would wrap, so it is refused rather than silently mixed."""
    for side, rank in (("a", 64), ("b", 64), ("a", 256), ("b", 256)):  # rows of A+E (r <= 64) and windows
        a, b = operands(6, 64, 1100, 64)
        (a if side == "a" else b)[3, 5] = 64 if side == "a" else -64
        noise = draw_noise(b"\x06" * 32, 64, 1100, 64, rank)
        if kernels.HAVE_NUMBA:
            with pytest.raises(ValueError, match="beyond"):
                kernels.noisy_operands(a, b, noise, 100, rows=64)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 300])
def test_host_ticket_scan_equals_the_device_one(count: int) -> None:
    from pouw.kernels.blake3_triton import first_winner, win_threshold
    from pouw.transcript import scan_tickets

    rng = np.random.default_rng(count)
    raw = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
    if count > 2:
        raw[2] = raw[0]  # equal tickets: the first one is the lowest
        raw[count - 1, 0] = 0
    tickets = [row.tobytes() for row in raw]
    for target in (0, 1 << 240, 1 << 250, 1 << 255, 1 << 300):
        got = scan_tickets(tickets, target, 64 * 64 * 128, 64 * 64 * 64)
        want = first_winner(torch.from_numpy(raw), win_threshold(target, 64 * 64 * 128, 64 * 64 * 64))
        assert got.winner == want.winner
        assert got.winner_ticket == (tickets[want.winner] if want.winner >= 0 else None)
        if count:
            assert got.best == want.best and got.best_ticket == tickets[got.best]
        else:
            assert got.best == -1 and got.best_ticket is None


@pytest.mark.parametrize("value", [64, -64, -128, 127])
def test_noisy_product_refuses_an_operand_beyond_the_payload_bound(value: int) -> None:
    """Checked by min and max (an int8 ``abs`` would keep −128), on A and on B, before any work."""
    from chain.errors import ValidationError

    backend = get_backend("cpu:float32")
    for side in ("a", "b"):
        a, b = operands(7, 64, 64, 64)
        (a if side == "a" else b)[5, 9] = value
        with pytest.raises(ValidationError, match="beyond"):
            noisy_product(DEVNET, SEED, 0, 0, a, b, backend.int_mm, backend)
    assert kernels.within(np.full((3, 5), -63, dtype=np.int8), 63)


@pytest.mark.parametrize("numba", [True, False])
def test_tile_tickets_and_leaves_equal_the_blake3_references(numba: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """transcript's ticket and leaf hashes are blake3_triton's host references (the ``blake3``
    package) under the protocol's keys: the numba compression (one per tile) and its fallback."""
    from pouw.kernels.blake3_triton import leaf_hashes_host, tickets_host
    from pouw.transcript import LEAF_KEY, TICKET_KEY, block_roots, tile_tickets

    if not numba:
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    rng = np.random.default_rng(12)
    lanes = rng.integers(0, 1 << 32, size=(300, 4), dtype=np.int64)  # every byte of a lane word
    lanes[0] = 0
    lanes[1] = (1 << 32) - 1
    sigma = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
    assert tile_tickets(sigma, lanes) == tickets_host(sigma, lanes, TICKET_KEY)
    assert tile_tickets(sigma, lanes[:0]) == []
    for bad in (-1, 1 << 32):
        with pytest.raises(ValueError):
            tile_tickets(sigma, np.array([[0, 0, bad, 0]]))
    rows = rng.integers(-63, 64, size=(200, 48), dtype=np.int8)
    assert block_roots(rows, 64) == leaf_hashes_host(rows, 64, LEAF_KEY)


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize("shape", [(64, 64), (24, 40), (7, 13)])
def test_transposed_within_is_the_transpose_and_the_payload_check(
    shape: tuple[int, int], numba: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payload check and Bᵀ of a noisy product in one call: both operands checked, by min and max."""
    if not numba:
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    rng = np.random.default_rng(shape[0])
    a = rng.integers(-63, 64, (shape[1], shape[0]), dtype=np.int8)
    b = rng.integers(-63, 64, shape, dtype=np.int8)
    bt, ok = kernels.transposed_within(a, b, 63)
    assert ok and bt.flags.c_contiguous and np.array_equal(bt, b.T)
    for value in (64, -64, -128):
        for target in (a, b):
            saved = target[-1, -1]
            target[-1, -1] = value
            assert not kernels.transposed_within(a, b, 63)[1]
            target[-1, -1] = saved


@pytest.mark.parametrize("shape", [(8, 8), (64, 512), (512, 64), (24, 40), (7, 16), (128, 130), (2048, 64)])
def test_int8_transpose_is_the_transpose(shape: tuple[int, int]) -> None:
    """The 8 × 8 word-block transpose (sides multiples of 8) and its fallbacks, on every byte value."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    got = kernels.transpose_int8(x)
    assert got.flags.c_contiguous and np.array_equal(got, x.T)
    assert np.array_equal(kernels.transpose_int8(got), x)
    strided = np.ascontiguousarray(np.concatenate([x, x], axis=1))[:, : shape[1]]  # a view, not contiguous
    assert np.array_equal(kernels.transpose_int8(strided), x.T)
