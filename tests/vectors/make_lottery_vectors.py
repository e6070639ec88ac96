"""Regenerate tests/vectors/lottery.json: noisy-transcript products, their tickets and a proof.

Run ``.venv/bin/python -m tests.vectors.make_lottery_vectors`` from the repository root. Operands
come from ``Prng("pouw/test-operands", case, 0|1)`` (entries ``randbelow(127) - 63``). Each case
records the operand commitments, σ_m, a hash of the noise factors, every tile's ticket, a hash of
the exact product, and the proof of the first tile that wins at ``target``. The tests hold every
backend to this file (and test_transcript.py holds the code to a plain-Python reading of the spec),
so regenerating it is a protocol change.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chain.hashing import hash_bytes
from pouw.backends import get_backend
from pouw.params import DEVNET, PouwParams
from pouw.prng import Prng
from pouw.transcript import NoisyProduct, noisy_product, ticket_wins, tile_digest

HERE = Path(__file__).parent
PATH = HERE / "lottery.json"

CASES: list[dict[str, Any]] = [
    # matmul 0 of the devnet job (64, 128, 64) at batch 64: two tiles, one chunk
    {
        "name": "devnet-forward-0",
        "params": {},
        "shape": [64, 64, 128],
        "step": 7,
        "index": 0,
        "target_log2": 256,
    },
    # several chunks with a short last one, a grid of 32 small tiles, and odd rank
    {
        "name": "small-tiles-chunks",
        "params": {"rank": 17, "chunk": 12, "tile_m": 16, "tile_n": 16},
        "shape": [64, 64, 128],
        "step": 123456789,
        "index": 3,
        "target_log2": 258,
    },
]
HEADER_SEED = bytes(range(100, 132))


def case_params(case: dict[str, Any]) -> PouwParams:
    return dataclasses.replace(DEVNET, **case["params"])


def case_operands(case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    m, k, n = case["shape"]
    a = Prng("pouw/test-operands", case["name"], 0).randbelow_array(127, m * k) - 63
    b = Prng("pouw/test-operands", case["name"], 1).randbelow_array(127, k * n) - 63
    return (
        torch.from_numpy(a.astype(np.int8).reshape(m, k)),
        torch.from_numpy(b.astype(np.int8).reshape(k, n)),
    )


def run_case(case: dict[str, Any], backend_name: str) -> tuple[NoisyProduct, torch.Tensor]:
    backend = get_backend(backend_name)
    a, b = (t.to(backend.device) for t in case_operands(case))
    product = noisy_product(case_params(case), HEADER_SEED, case["step"], case["index"], a, b, backend.int_mm, backend)
    return product, product.exact(a).cpu()


def noise_hash(product: NoisyProduct) -> str:
    noise = product.noise
    parts = (noise.e_left, noise.e_right, noise.f_left, noise.f_right)
    return hash_bytes(b"".join(t.cpu().numpy().tobytes() for t in parts)).hex()


def first_winner(product: NoisyProduct, target: int) -> int:
    reference_work = product.params.reference_work
    return next(i for i, t in enumerate(product.tickets) if ticket_wins(t, target, product.tile_work, reference_work))


def winning_digest(product: NoisyProduct, tile_index: int) -> bytes:
    """The tile's 16-byte transcript digest, the validator's way (from the proof's rows/columns)."""
    proof = product.tile_proof(tile_index)
    p = product.params
    a_rows = np.frombuffer(proof.a_rows, dtype=np.int8).reshape(p.tile_m, proof.k)
    b_cols = np.frombuffer(proof.b_cols, dtype=np.int8).reshape(p.tile_n, proof.k)
    return tile_digest(p, product.sigma_m, product.shape, tile_index, a_rows, b_cols)


def vector(case: dict[str, Any]) -> dict[str, Any]:
    product, exact = run_case(case, "reference")
    target = 1 << case["target_log2"]
    winner = first_winner(product, target)
    return {
        **case,
        "header_seed": HEADER_SEED.hex(),
        "ha": product.ha.hex(),
        "hb": product.hb.hex(),
        "sigma_m": product.sigma_m.hex(),
        "noise_hash": noise_hash(product),
        "tickets": [t.hex() for t in product.tickets],
        "product_hash": hash_bytes(exact.numpy().astype("<i4").tobytes()).hex(),
        "winning_tile": winner,
        "winning_digest": winning_digest(product, winner).hex(),
        "proof": product.tile_proof(winner).encode().hex(),
    }


def main() -> None:
    PATH.write_text(json.dumps({"cases": [vector(c) for c in CASES]}, indent=1) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
