"""A job that ends: a real regtest node and a real CPU miner finish a client job with 5 steps left.

The client job's model is small (one 64x64 layer), so a regtest block takes about 8 of its steps on
average: most shards reach the job's last step without a win. The miner must never claim more than
the 5 steps the template allows (the node would reject the block: ``bad-job-progress``), must leave
the spent job for the built-in one until the tip moves, and come back to finish it. Checked: the job
finishes, no submission is rejected (node metrics, miner status line), and blocks keep coming with
no stall while it happens.
"""

from __future__ import annotations

import hashlib
import itertools
import re

from chain.types import JobSpec, JobSubmit
from consensus.presets import REGTEST_PRESET
from tests.functional.conftest import Network
from tests.functional.framework import TestNode, wait_until
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER_KEY = PrivateKey(hashlib.sha256(b"functional-job-end").digest())
MINER = encode_address(MINER_KEY.address)
JOB_STEPS = 5
MAX_GAP_S = 20.0
"""The longest a regtest block may take here (about 1 s expected; generous for a loaded 2-core CI)."""


def submissions(node: TestNode) -> dict[tuple[str, str], int]:
    text = node.get_bytes("/metrics").decode()
    counts = {}
    for outcome, reason, value in re.findall(
            r'^pouw_mining_submissions_total\{outcome="([^"]*)",reason="([^"]*)"\} ([0-9.e+]+)$', text, re.M):
        counts[(outcome, reason)] = int(float(value))
    return counts


def test_a_client_job_with_5_steps_left_is_finished_without_a_rejected_block(network: Network) -> None:
    node = network.add_node(preset="regtest")
    miner = network.add_miner(node, MINER)
    wait_until(lambda: node.height() >= 2, 60, "the miner to fund itself")

    spec = JobSpec(dims=(64, 64), dataset_id=REGTEST_PRESET.builtin_dataset().id, batch_size=64, lr_shift=8,
                   total_steps=JOB_STEPS, fee_per_step=1_000)
    nonce = node.get(f"/api/accounts/{MINER}")["next_nonce"]
    tx = sign_tx(MINER_KEY, JobSubmit(chain_id=REGTEST_PRESET.chain_id, nonce=nonce, fee=20_000, spec=spec,
                                      name="five-steps"))
    txid = node.post("/api/tx", {"tx": tx.encode().hex()})["txid"]
    wait_until(lambda: node.get(f"/api/tx/{txid}")["status"] == "confirmed", 30, "the job to confirm")
    job_id = next(j["job_id"] for j in node.get("/api/jobs")["jobs"] if j["name"] == "five-steps")
    confirmed_at = node.get(f"/api/tx/{txid}")["height"]  # the chain may be blocks further already

    job = wait_until(lambda: (j := node.get(f"/api/jobs/{job_id}"))["status"] == "finished" and j, 60,
                     "the miner to finish the client job")
    assert job["steps_done"] == JOB_STEPS and job["steps_left"] == 0
    assert job["escrow_spent"] == JOB_STEPS * 1_000
    finished_at = node.height()
    # The chain goes on with the built-in job: a finished job hands the miner to the next one.
    wait_until(lambda: node.height() >= finished_at + 3, 30, "blocks after the job finished")
    miner.stop()

    # No stall: consecutive blocks from the job's confirmation on are never far apart.
    blocks = node.get(f"/api/blocks?limit={min(200, node.height() - confirmed_at + 1)}")["blocks"]
    stamps = sorted(b["timestamp"] for b in blocks)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps and max(gaps) <= MAX_GAP_S, gaps
    trained = [b for b in blocks if b["job_id"] == job_id]
    assert sum(b["steps"] for b in trained) == JOB_STEPS

    counts = submissions(node)
    assert not any(n for (outcome, _), n in counts.items() if outcome == "rejected"), counts
    assert counts[("accepted", "")] >= finished_at
    log = miner.log_path.read_text(errors="replace")
    assert "block rejected" not in log and "Traceback" not in log
    assert re.search(r"done: \d+ blocks accepted, \d+ stale, 0 rejected", log), log[-2000:]

