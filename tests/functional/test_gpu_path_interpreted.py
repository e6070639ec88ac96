"""The GPU path of the miner end to end, on the CPU: a real regtest node and a real ``pouw-mine``
whose noisy products run the device code — operand leaves and tickets hashed by the BLAKE3 Triton
kernels, C' and the tile lanes by the transcript kernel, noise expanded by int8 GEMMs, the draws
read once per step — under the Triton interpreter (``TRITON_INTERPRET=1``, ``POUW_TRITON_ON_CPU=1``).

The node checks every block with the CPU reference (``verify_seal``), so an accepted block means
the device path's commitments, tickets and proofs are the protocol's, bit for bit, through the
real miner loop, its template hand-offs and its submissions. (No GPU runs this; on a CUDA machine
the same code is compiled instead of interpreted.)
"""

from __future__ import annotations

import hashlib

import pytest

from tests.functional.conftest import Network
from tests.functional.framework import wait_until
from tests.functional.test_job_end import submissions
from wallet.address import encode_address
from wallet.keys import PrivateKey

pytest.importorskip("triton")

MINER = encode_address(PrivateKey(hashlib.sha256(b"functional-gpu-path").digest()).address)


def test_a_miner_on_the_device_path_mines_blocks_the_node_accepts(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = network.add_node(preset="regtest")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by the miner process at start
    monkeypatch.setenv("POUW_TRITON_ON_CPU", "1")
    miner = network.add_miner(node, MINER)
    wait_until(lambda: node.height() >= 2, 300, "2 blocks from the interpreted device path")
    miner.stop()
    log = miner.log_path.read_text(errors="replace")
    assert "noisy products: triton (interpreter, on the CPU)" in log, log[-2000:]
    counts = submissions(node)
    accepted = sum(v for (outcome, _), v in counts.items() if outcome == "accepted")
    rejected = {key: v for key, v in counts.items() if key[0] == "rejected" and v}
    assert accepted >= 2 and not rejected, counts
    blocks = node.get("/api/blocks?limit=10")["blocks"]
    assert all(b["miner"] == MINER and b["tile"] is not None for b in blocks if b["height"] > 0)
