"""The noisy-transcript product: exact denoising, commitments, tickets, and the win rule."""

from __future__ import annotations

import dataclasses

import blake3
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chain.encoding import pack
from chain.errors import ValidationError
from chain.hashing import merkle_root_of_hashes, tagged_hash
from pouw.backends import Backend, get_backend
from pouw.kernels import blake3_triton
from pouw.noise import draw_noise
from pouw.params import DEVNET, PRESETS, PouwParams
from pouw.prng import Prng
from pouw.transcript import (
    MIX_PRIME,
    NoisyTranscriptProduct,
    commit_rows,
    matmul_seed,
    scan_tickets,
    ticket_wins,
    tile_digest,
    tile_ticket,
)

CPU = get_backend("cpu")


def operands(seed: int, m: int, k: int, n: int, extreme: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    if extreme:  # only ±63: the worst case for the int8 headroom
        a = rng.choice(np.array([-63, 63], dtype=np.int8), size=(m, k))
        b = rng.choice(np.array([-63, 63], dtype=np.int8), size=(k, n))
    else:
        a = rng.integers(-63, 64, size=(m, k), dtype=np.int8)
        b = rng.integers(-63, 64, size=(k, n), dtype=np.int8)
    return torch.from_numpy(a), torch.from_numpy(b)


def product(
    params: PouwParams,
    a: torch.Tensor,
    b: torch.Tensor,
    target: int = 0,
    backend: Backend = CPU,
    seed: bytes = b"\x05" * 32,
    step: int = 3,
    index: int = 1,
) -> tuple[torch.Tensor, NoisyTranscriptProduct]:
    hook = NoisyTranscriptProduct(params, seed, step, target, backend)
    return hook(a.to(backend.device), b.to(backend.device), index).cpu(), hook


shapes = st.sampled_from([64, 128, 192])


@given(
    m=shapes,
    k=shapes,
    n=shapes,
    rank=st.sampled_from([1, 7, 16, 64, 100, 256]),
    chunk_part=st.integers(1, 8),
    extreme=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_denoised_product_is_exactly_a_times_b(
    m: int, k: int, n: int, rank: int, chunk_part: int, extreme: bool, seed: int
) -> None:
    chunk = max(1, rank * chunk_part // 8)
    params = dataclasses.replace(DEVNET, rank=rank, chunk=chunk)
    params.validate()
    a, b = operands(seed, m, k, n, extreme)
    c, hook = product(params, a, b)
    assert c.dtype == torch.int32
    assert np.array_equal(c.numpy(), a.numpy().astype(np.int64) @ b.numpy().astype(np.int64))
    assert hook.tiles_evaluated == (m // 64) * (n // 64)
    assert hook.macs == m * k * n


LEAF_KEY = blake3.blake3(b"pouw-chain v3: operand leaf").digest()  # the spec's constants, restated
TICKET_KEY = blake3.blake3(b"pouw-chain v3: tile ticket").digest()


def spec_root(blocks: list[bytes]) -> bytes:
    """Part IV §2 read plainly: keyed-BLAKE3 leaves, BLAKE2b "pouw/mk-node" nodes above them."""
    return merkle_root_of_hashes([blake3.blake3(x, key=LEAF_KEY).digest() for x in blocks])


def test_row_commitment_is_the_merkle_root_over_row_blocks() -> None:
    a, _ = operands(1, 256, 64, 64)
    rows = a.numpy()
    for block in (1, 4, 64, 256):
        assert commit_rows(rows, block) == spec_root([rows[i : i + block].tobytes() for i in range(0, 256, block)])
    assert commit_rows(rows, 1) != commit_rows(rows, 64)  # the block size is part of the definition
    flipped = rows.copy()
    flipped[200, 3] ^= 1
    assert commit_rows(flipped, 64) != commit_rows(rows, 64)


def test_every_miner_ticket_matches_the_validators_one_tile_recomputation() -> None:
    params = dataclasses.replace(DEVNET, rank=32, chunk=24)  # 64 = 24 + 24 + 16: a short last chunk
    m, k, n = 128, 64, 192
    a, b = operands(2, m, k, n)
    a_np, bt_np = a.numpy(), np.ascontiguousarray(b.numpy().T)
    ha, hb = commit_rows(a_np, 64), commit_rows(bt_np, 64)
    sigma_m = matmul_seed(b"\x05" * 32, 3, 1, (m, k, n), ha, hb)
    # a target of 2**256 makes every tile win; the hook keeps the first one
    _, hook = product(params, a, b, target=(1 << 256))
    assert hook.winner is not None and hook.winner.tile_index == 0
    assert (hook.winner.ha, hook.winner.hb) == (ha, hb)
    tickets = []
    for tile_index in range(6):
        row, col = divmod(tile_index, 3)
        digest = tile_digest(
            params,
            sigma_m,
            (m, k, n),
            tile_index,
            a_np[row * 64 : row * 64 + 64],
            bt_np[col * 64 : col * 64 + 64],
        )
        tickets.append(tile_ticket(sigma_m, tile_index, digest))
    assert hook.best_ticket == min(tickets)
    assert hook.winning_ticket == tickets[0]
    assert len(set(tickets)) == 6


def _reference_tile_ticket(
    params: PouwParams, seed: bytes, step: int, index: int, a: np.ndarray, b: np.ndarray, tile_index: int
) -> bytes:
    """The whole tile pipeline in plain Python integers, straight from the spec."""
    m, k = a.shape
    n = b.shape[1]
    bm, bn, p = params.tile_m, params.tile_n, MIX_PRIME
    ha = spec_root([a[i : i + bm].tobytes() for i in range(0, m, bm)])
    hb = spec_root([np.ascontiguousarray(b.T)[j : j + bn].tobytes() for j in range(0, n, bn)])
    sigma_m = tagged_hash("pouw/sigma-m", pack([seed, step, index, m, k, n, ha, hb]))
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    e, f = noise.e().tolist(), noise.f().tolist()
    row0, col0 = (tile_index // (n // bn)) * bm, (tile_index % (n // bn)) * bn
    weights = (Prng("pouw/mix-weights", bm, bn).randbelow_array(p - 1, 4 * bm * bn) + 1).tolist()
    lanes = [0, 0, 0, 0]
    for i in range(bm):
        for j in range(bn):
            h, partial = 0, 0
            for c, start in enumerate(range(0, k, params.chunk)):
                for kk in range(start, min(start + params.chunk, k)):
                    partial += (int(a[row0 + i, kk]) + e[row0 + i][kk]) * (int(b[kk, col0 + j]) + f[kk][col0 + j])
                u = ((h ^ (partial % 2**32)) * 0x7FEB352D) % 2**32
                h = ((u ^ (u >> 16)) + c + 1) % 2**32
            for lane in range(4):
                lanes[lane] = (lanes[lane] + h * weights[lane * bm * bn + i * bn + j]) % p
    digest = b"".join(v.to_bytes(4, "big") for v in lanes)
    return blake3.blake3(sigma_m + tile_index.to_bytes(8, "little") + digest, key=TICKET_KEY).digest()


def test_tickets_match_a_plain_python_reference_of_the_spec() -> None:
    params = dataclasses.replace(DEVNET, rank=16, chunk=12, tile_m=4, tile_n=8)
    m, k, n = 64, 64, 64
    a, b = operands(3, m, k, n, extreme=True)
    _, hook = product(params, a, b, target=1 << 300, step=9, index=2)
    assert hook.winner is not None
    want = _reference_tile_ticket(params, b"\x05" * 32, 9, 2, a.numpy(), b.numpy(), 0)
    assert hook.winning_ticket == want
    # and a tile away from the origin, through the validator's path
    tile_index = 37
    row, col = divmod(tile_index, n // 8)
    a_np, bt_np = a.numpy(), np.ascontiguousarray(b.numpy().T)
    sigma_m = matmul_seed(b"\x05" * 32, 9, 2, (m, k, n), commit_rows(a_np, 4), commit_rows(bt_np, 8))
    digest = tile_digest(
        params, sigma_m, (m, k, n), tile_index, a_np[row * 4 : row * 4 + 4], bt_np[col * 8 : col * 8 + 8]
    )
    assert tile_ticket(sigma_m, tile_index, digest) == _reference_tile_ticket(
        params, b"\x05" * 32, 9, 2, a_np, b.numpy(), tile_index
    )


def test_tickets_change_with_the_seed_the_step_the_index_and_any_operand_entry() -> None:
    a, b = operands(4, 64, 64, 64)
    _, base = product(DEVNET, a, b)
    variants = [
        product(DEVNET, a, b, seed=b"\x06" * 32)[1],
        product(DEVNET, a, b, step=4)[1],
        product(DEVNET, a, b, index=2)[1],
    ]
    a2 = a.clone()
    a2[17, 5] = 63 if int(a2[17, 5]) != 63 else 62
    variants.append(product(DEVNET, a2, b)[1])
    assert len({base.best_ticket, *(v.best_ticket for v in variants)}) == 5


@pytest.mark.parametrize("kind", ["float32", "float64", "int_mm"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_cpu_backend_gives_the_reference_tickets_and_product(kind: str, name: str) -> None:
    """The fused CPU kernel (whatever GEMM feeds it) and the reference path agree bit for bit."""
    params = PRESETS[name]
    a, b = operands(11, 128, 5 * params.chunk // 2 if params.chunk % 2 == 0 else 192, 192, extreme=kind == "int_mm")
    a = a[:, : a.shape[1] // 64 * 64].contiguous()
    b = b[: a.shape[1]].contiguous()
    got, fused = product(params, a, b, backend=get_backend(f"cpu:{kind}"))
    want, reference = product(params, a, b, backend=get_backend("reference"))
    assert fused.best_ticket == reference.best_ticket
    assert torch.equal(got, want)
    assert torch.equal(got, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))


def test_win_rule_is_exact_integer_arithmetic_at_the_boundary() -> None:
    ticket = (12345).to_bytes(32, "big")
    # ticket * ref < target * work  <=>  12345 * 7 < target * 3  <=>  target > 28805
    assert not ticket_wins(ticket, 28805, 3, 7)
    assert ticket_wins(ticket, 28806, 3, 7)
    assert not ticket_wins(b"\x00" * 32, 0, 10, 1)
    assert ticket_wins(b"\xff" * 32, 1 << 256, 1, 1)


@given(
    tickets=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40),
    target=st.one_of(st.integers(0, 1 << 257), st.integers(0, 1 << 64)),
    tile_work=st.integers(1, 1 << 40),
    reference_work=st.integers(1, 1 << 40),
    near=st.booleans(),
)
def test_batched_win_check_agrees_with_the_integer_rule(
    tickets: list[bytes], target: int, tile_work: int, reference_work: int, near: bool
) -> None:
    """Both scans the hook runs on a matmul's tickets (plain Python for host tickets, torch ops for
    device ones, here on a CPU tensor) are the win rule, tile for tile, including tickets right at
    the boundary ⌈target·tile_work/reference_work⌉ and its neighbours."""
    bound = -(-target * tile_work // reference_work)
    if near and 1 <= bound < 1 << 256:
        tickets = [*tickets, (bound - 1).to_bytes(32, "big"), bound.to_bytes(32, "big")]
    array = torch.from_numpy(np.frombuffer(b"".join(tickets), dtype=np.uint8).reshape(-1, 32).copy())
    wins = [i for i, t in enumerate(tickets) if ticket_wins(t, target, tile_work, reference_work)]
    on_host = scan_tickets(tickets, target, tile_work, reference_work)
    on_device = blake3_triton.first_winner(array, blake3_triton.win_threshold(target, tile_work, reference_work))
    for scan in (on_host, on_device):
        assert scan.winner == (wins[0] if wins else -1)
        assert scan.winner_ticket == (tickets[wins[0]] if wins else None)
        assert tickets[scan.best] == scan.best_ticket == min(tickets)
        assert scan.best == tickets.index(min(tickets))  # the first of equals


def test_hook_rejects_operands_beyond_the_payload_bound() -> None:
    a, b = operands(5, 64, 64, 64)
    a[0, 0] = 64
    with pytest.raises(ValidationError):
        product(DEVNET, a, b)


def test_params_enforce_chunk_at_most_rank() -> None:
    with pytest.raises(ValidationError):
        dataclasses.replace(DEVNET, chunk=DEVNET.rank + 1).validate()
    with pytest.raises(ValidationError):
        dataclasses.replace(DEVNET, tile_m=48).validate()
    for preset in PRESETS.values():
        preset.validate()
        assert preset.chunk <= preset.rank
