"""Regenerate tests/vectors/prng.json and tests/vectors/training_step.json.

Run ``.venv/bin/python -m tests.vectors.make_training_vectors`` from the repository root. The
training vectors are computed with the independent reference (pouw/reference.py); the tests then
hold every backend to the checked-in files, so regenerating them is a protocol change.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from pouw.datasets import Dataset, digits, load_dataset
from pouw.model import ModelConfig, init_state
from pouw.prng import Prng
from pouw.reference import dither_hash32, reference_train_step

HERE = Path(__file__).parent
SLICE_ROWS = 128
SYNTHETIC_SPEC = "synthetic:n=256,d=128,classes=12,seed=7"
PRNG_CASES: list[tuple[str, list[bytes | int]]] = [
    ("pouw/test", []),
    ("pouw/batch", [b"\x00" * 32, 0]),
    ("pouw/sround", [bytes(range(32)), 12345]),
    ("pouw/init-weights", [b"seed"]),
]
TRAINING_CASES: list[dict[str, Any]] = [
    {"name": "devnet-digits", "dims": [64, 128, 64], "batch_size": 64, "lr_shift": 8, "steps": 3},
    {"name": "deep-lr0", "dims": [64, 64, 128, 64], "batch_size": 128, "lr_shift": 0, "steps": 2},
    {"name": "tiny-lr-high", "dims": [64, 64], "batch_size": 64, "lr_shift": 40, "steps": 2},
]


def prng_vectors() -> list[dict[str, Any]]:
    out = []
    for domain, parts in PRNG_CASES:
        fresh = functools.partial(Prng, domain, *parts)
        out.append({
            "domain": domain,
            "parts": [p.hex() if isinstance(p, bytes) else p for p in parts],
            "bytes_64": fresh().bytes(64).hex(),
            "u64s_4": [str(int(w)) for w in fresh().u64s(4)],
            "randbelow_1000_x8": _scalar_draws(fresh(), 1000, 8),
            "randbelow_array_10_x16": [int(v) for v in fresh().randbelow_array(10, 16)],
            "randbelow_3e18_x4": _scalar_draws(fresh(), 3 * 10**18, 4),
            "sample_without_replacement_20_5": fresh().sample_without_replacement(20, 5),
        })  # fmt: skip
    return out


def _scalar_draws(prng: Prng, n: int, count: int) -> list[int]:
    return [prng.randbelow(n) for _ in range(count)]


def digits_slice() -> Dataset:
    full = digits()
    return Dataset(
        "digits[:128]", full.x_train[:SLICE_ROWS], full.y_train[:SLICE_ROWS],
        full.x_test[:0], full.y_test[:0], n_classes=full.n_classes,
    )  # fmt: skip


def training_vectors() -> dict[str, Any]:
    data = digits_slice()
    cases = []
    for case in TRAINING_CASES:
        config = ModelConfig(tuple(case["dims"]), case["batch_size"], case["lr_shift"])
        init_seed, trajectory_seed = b"vector-init-" + case["name"].encode(), b"\x5a" * 32
        state = init_state(config, init_seed)
        record = dict(case, init_seed=init_seed.hex(), trajectory_seed=trajectory_seed.hex())
        record["pre_state_hash"] = state.hash().hex()
        record["pre_weights_head"] = [int(v) for v in state.weights[0].ravel()[:8]]
        hashes = []
        for _ in range(case["steps"]):
            state = reference_train_step(config, state, data, trajectory_seed)
            hashes.append(state.hash().hex())
        record["post_state_hashes"] = hashes
        record["post_weights_head"] = [int(v) for v in state.weights[-1].ravel()[:8]]
        record["step0_batch_head"] = [
            int(v) for v in Prng("pouw/batch", trajectory_seed, 0).randbelow_array(data.n_train, 8)
        ]
        cases.append(record)
    return {
        "dataset": {
            "name": data.name,
            "n_classes": data.n_classes,
            "x_train_hex": data.x_train.tobytes().hex(),
            "y_train": [int(v) for v in data.y_train],
            "id": data.id.hex(),
        },
        "dataset_ids": {
            "digits": digits().id.hex(),
            SYNTHETIC_SPEC: load_dataset(SYNTHETIC_SPEC).id.hex(),
        },
        "dither": dither_vectors(),
        "cases": cases,
    }


def dither_vectors() -> list[dict[str, Any]]:
    """The raw 32-bit dither hash of elements 0..7 under a few keys (see docs/protocol.md Part III)."""
    keys = (0, 1, 0x0123456789ABCDEF, (1 << 64) - 1)
    return [{"key": str(k), "hash32": [int(v) for v in dither_hash32(k, 8)]} for k in keys]


def _compact_lists(text: str) -> str:
    """Put each list of numbers or short strings on one line."""
    return re.sub(r"\[\s+([-\w\s,\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def main() -> None:
    for name, payload in (("prng.json", prng_vectors()), ("training_step.json", training_vectors())):
        (HERE / name).write_text(_compact_lists(json.dumps(payload, indent=1)) + "\n")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
