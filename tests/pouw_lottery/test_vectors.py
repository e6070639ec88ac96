"""Golden vectors (tests/vectors/lottery.json): every backend, and the validator, reproduce them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chain.hashing import hash_bytes
from pouw.errors import SealCheck, SealError
from pouw.params import DEVNET
from pouw.proof import TileProof
from pouw.transcript import tile_digest, tile_ticket
from pouw.verify import verify_tile_under_seed
from tests.conftest import requires_cuda
from tests.pouw_lottery.conftest import CONFIG
from tests.vectors.make_lottery_vectors import (
    HEADER_SEED,
    PATH,
    case_params,
    noise_hash,
    run_case,
)

CASES: list[dict[str, Any]] = json.loads(PATH.read_text())["cases"]


def check_backend(backend_name: str, case: dict[str, Any]) -> None:
    product, exact = run_case(case, backend_name)
    assert product.ha.hex() == case["ha"] and product.hb.hex() == case["hb"]
    assert product.sigma_m.hex() == case["sigma_m"]
    assert noise_hash(product) == case["noise_hash"]
    assert [t.hex() for t in product.tickets] == case["tickets"]
    assert hash_bytes(exact.numpy().astype("<i4").tobytes()).hex() == case["product_hash"]
    assert product.tile_proof(case["winning_tile"]).encode().hex() == case["proof"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("backend_name", ["cpu", "cpu:float32", "cpu:float64", "cpu:int_mm", "reference"])
def test_host_backends_reproduce_the_vectors(backend_name: str, case: dict[str, Any]) -> None:
    check_backend(backend_name, case)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cuda_reproduces_the_cpu_vectors(case: dict[str, Any]) -> None:
    check_backend("cuda", case)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_validator_recomputes_every_tile_ticket(case: dict[str, Any]) -> None:
    params = case_params(case)
    m, k, n = case["shape"]
    proof = TileProof.decode(bytes.fromhex(case["proof"]))
    assert proof.tile_index == case["winning_tile"]
    sigma_m = bytes.fromhex(case["sigma_m"])
    product, _ = run_case(case, "cpu")
    col_tiles = n // params.tile_n
    for tile_index, ticket in enumerate(case["tickets"]):
        row, col = divmod(tile_index, col_tiles)
        a_rows = product.a_host[row * params.tile_m : (row + 1) * params.tile_m]
        b_cols = product.bt_host[col * params.tile_n : (col + 1) * params.tile_n]
        digest = tile_digest(params, sigma_m, (m, k, n), tile_index, a_rows, b_cols)
        if tile_index == case["winning_tile"]:
            assert digest.hex() == case["winning_digest"]
        assert tile_ticket(sigma_m, tile_index, digest).hex() == ticket


def test_the_devnet_vector_proof_verifies_and_only_at_its_target() -> None:
    case = CASES[0]
    proof = bytes.fromhex(case["proof"])
    tile = verify_tile_under_seed(DEVNET, CONFIG, HEADER_SEED, 1 << case["target_log2"], proof)
    assert tile.ticket.hex() == case["tickets"][case["winning_tile"]]
    tile_work = DEVNET.tile_m * DEVNET.tile_n * case["shape"][1]
    lowest = int.from_bytes(tile.ticket, "big") * DEVNET.reference_work // tile_work + 1
    verify_tile_under_seed(DEVNET, CONFIG, HEADER_SEED, lowest, proof)
    with pytest.raises(SealError) as err:
        verify_tile_under_seed(DEVNET, CONFIG, HEADER_SEED, lowest - 1, proof)
    assert err.value.check is SealCheck.TARGET
