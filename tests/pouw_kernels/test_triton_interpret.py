"""The Triton kernel of the GPU path, run by the Triton interpreter on the CPU, against the reference.

The cases run in one subprocess with ``TRITON_INTERPRET=1`` (read when triton compiles a kernel)
and ``POUW_TRITON_ON_CPU=1`` (routes ``noisy_product`` through the kernel on CPU tensors), and
prints the tickets and a hash of C' and of the exact product; the test compares them with the
reference path computed here. Shapes stay small: the interpreter runs numpy per program.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from chain.hashing import hash_bytes
from pouw.backends import get_backend
from pouw.params import DEVNET, MAINNET, TESTNET
from pouw.transcript import noisy_product

triton = pytest.importorskip("triton")

SCRIPT = """
import json, sys
import numpy as np, torch
from chain.hashing import hash_bytes
from pouw.backends import get_backend
from pouw.params import PRESETS
from pouw.transcript import NoisyTranscriptProduct, noisy_product, triton_eligible
out = []
for case in json.loads(sys.argv[1]):
    name, m, k, n = case
    params = PRESETS[name]
    assert triton_eligible(params, k, torch.device("cpu"))
    rng = np.random.default_rng(m + k + n)
    a = torch.from_numpy(rng.integers(-63, 64, (m, k), dtype=np.int8))
    b = torch.from_numpy(rng.integers(-63, 64, (k, n), dtype=np.int8))
    ref = get_backend("reference")
    p = noisy_product(params, b"\\x09" * 32, 4, 1, a, b, ref.int_mm, ref)
    out.append({
        "tickets": [t.hex() for t in p.tickets],
        "c_noisy": hash_bytes(p.c_noisy.to(torch.int64).numpy().tobytes()).hex(),
        "exact": hash_bytes(p.exact(a).numpy().tobytes()).hex(),
    })
print(json.dumps(out))
"""

CASES = [(DEVNET, 64, 128, 128), (TESTNET, 128, 192, 64), (MAINNET, 64, 320, 64)]


def test_triton_kernel_is_bit_identical_to_the_reference() -> None:
    cases = [[params.name, m, k, n] for params, m, k, n in CASES]
    env = {**os.environ, "TRITON_INTERPRET": "1", "POUW_TRITON_ON_CPU": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cases)], env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    ref = get_backend("reference")
    for (params, m, k, n), got in zip(CASES, results, strict=True):
        rng = np.random.default_rng(m + k + n)
        a = torch.from_numpy(rng.integers(-63, 64, (m, k), dtype=np.int8))
        b = torch.from_numpy(rng.integers(-63, 64, (k, n), dtype=np.int8))
        want = noisy_product(params, b"\x09" * 32, 4, 1, a, b, ref.int_mm)
        assert got["tickets"] == [t.hex() for t in want.tickets], params.name
        assert got["c_noisy"] == hash_bytes(want.c_noisy.to(torch.int64).numpy().tobytes()).hex()
        product = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
        assert got["exact"] == hash_bytes(product.numpy().tobytes()).hex()


def test_triton_kernel_handles_short_chunks_and_extreme_operands() -> None:
    """Chunks shorter than the dot depth, a short last chunk, and ±127 everywhere (the int32 edge)."""
    code = (
        "import numpy as np, torch\n"
        "from pouw.kernels.triton_gpu import triton_transcript\n"
        "from pouw.transcript import mix_weights\n"
        "rng = np.random.default_rng(1)\n"
        "a = torch.from_numpy(rng.choice(np.array([-127, 127], dtype=np.int8), (32, 88)))\n"
        "b = torch.from_numpy(rng.choice(np.array([-127, 127], dtype=np.int8), (88, 16)))\n"
        "c, lanes = triton_transcript(a, b, 12, mix_weights(16, 16, torch.device('cpu')))\n"
        "print(c.to(torch.int64).sum().item(), lanes.tolist())\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-2000:]
    from pouw.noise import exact_matmul
    from pouw.transcript import tile_lanes, transcript

    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.choice(np.array([-127, 127], dtype=np.int8), (32, 88)))
    b = torch.from_numpy(rng.choice(np.array([-127, 127], dtype=np.int8), (88, 16)))
    c_noisy, state = transcript(a.to(torch.int64), b.to(torch.int64), 12, exact_matmul)
    total, lanes = done.stdout.split(" ", 1)
    assert int(total) == int(c_noisy.sum())
    assert json.loads(lanes) == tile_lanes(state, 16, 16).tolist()


MINER_SCRIPT = """
import json
import torch
from pouw.backends import get_backend
from pouw.datasets import load_dataset
from pouw.mining import Miner
from pouw.model import ModelConfig, init_state
from pouw.params import DEVNET
from pouw.transcript import transcript_path
backend = get_backend("cpu:float32")
assert transcript_path(backend).startswith("triton"), transcript_path(backend)
config = ModelConfig(dims=(64, 64), batch_size=64, lr_shift=8)
miner = Miner(DEVNET, config, load_dataset("digits"), init_state(config, b"interpreted"), bytes(32), backend)
bests = []
assert miner.mine(b"\\x01" * 32, 0, 1, progress=lambda p: bests.append(p.best_ticket.hex()) and False) is None
result = miner.mine(b"\\x02" * 32, (1 << 256) - 1, 1)
claim = result.seal_claim
print(json.dumps({"best": bests, "proof": claim.proof.hex(), "steps": claim.steps,
                  "trajectory": claim.trajectory_root.hex(), "prefix": claim.prefix_root.hex(),
                  "final": claim.final_state_hash.hex(), "work": result.work_bytes.hex()}))
"""


def test_a_miner_on_the_device_path_makes_the_cpu_miners_seal() -> None:
    """The whole device path inside the real Miner (BLAKE3 leaf and ticket kernels, the transcript
    kernel, noise expanded by int8 GEMMs, the draws scanned once per step, a proof copied from
    device tensors): the same best ticket and the same seal as the fused CPU path, and the
    validator's CPU reference accepts it."""
    from pouw.datasets import load_dataset
    from pouw.mining import Miner
    from pouw.model import ModelConfig, init_state
    from pouw.verify import verify_seal

    env = {**os.environ, "TRITON_INTERPRET": "1", "POUW_TRITON_ON_CPU": "1"}
    done = subprocess.run([sys.executable, "-c", MINER_SCRIPT], env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])

    backend = get_backend("cpu")
    config = ModelConfig(dims=(64, 64), batch_size=64, lr_shift=8)
    dataset, start = load_dataset("digits"), init_state(config, b"interpreted")
    miner = Miner(DEVNET, config, dataset, start, bytes(32), backend)
    bests: list[str] = []
    assert miner.mine(b"\x01" * 32, 0, 1, progress=lambda p: bests.append(p.best_ticket.hex()) and False) is None
    result = miner.mine(b"\x02" * 32, (1 << 256) - 1, 1)
    assert result is not None
    claim = result.seal_claim
    assert got["best"] == bests and len(bests) == 1
    assert got["proof"] == claim.proof.hex() and got["work"] == result.work_bytes.hex()
    assert (got["steps"], got["trajectory"], got["prefix"], got["final"]) == (
        claim.steps, claim.trajectory_root.hex(), claim.prefix_root.hex(), claim.final_state_hash.hex())
    verify_seal(
        params=DEVNET, config=config, dataset=dataset, start_state=start, trajectory_seed=bytes(32),
        header_seed=b"\x02" * 32, target=(1 << 256) - 1, steps=claim.steps,
        final_state_hash=claim.final_state_hash, trajectory_root=claim.trajectory_root,
        prefix_root=claim.prefix_root, proof=bytes.fromhex(got["proof"]), work=bytes.fromhex(got["work"]),
        backend=backend,
    )
