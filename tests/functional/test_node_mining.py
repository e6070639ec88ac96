"""A real devnet node and a real CPU miner: blocks, useful training, exact rewards, and a restart."""

from __future__ import annotations

import hashlib

from chain.transition import subsidy_paid
from chain.types import Block, JobSpec, JobSubmit
from consensus.presets import DEVNET_PRESET
from pouw.model import ModelConfig
from tests.functional.conftest import Network
from tests.functional.framework import wait_until
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER_KEY = PrivateKey(hashlib.sha256(b"functional-miner").digest())
MINER = encode_address(MINER_KEY.address)
SUBSIDY = DEVNET_PRESET.subsidy(1)
RULES = DEVNET_PRESET.chain_rules


def test_devnet_node_and_cpu_miner(network: Network) -> None:
    node = network.add_node(preset="devnet")
    miner = network.add_miner(node, MINER)
    wait_until(lambda: node.height() >= 3, 240, "3 devnet blocks")

    # The miner (now funded) buys training: the job's escrow pays whoever trains it.
    nonce = node.get(f"/api/accounts/{MINER}")["next_nonce"]
    spec = JobSpec(dims=(64, 64, 64), dataset_id=DEVNET_PRESET.builtin_dataset().id, batch_size=64, lr_shift=8,
                   total_steps=50_000, fee_per_step=1_000)
    tx = sign_tx(MINER_KEY, JobSubmit(chain_id=DEVNET_PRESET.chain_id, nonce=nonce, fee=20_000, spec=spec,
                                      name="client-job"))
    txid = node.post("/api/tx", {"tx": tx.encode().hex()})["txid"]
    wait_until(lambda: node.get(f"/api/tx/{txid}")["status"] == "confirmed", 120, "the job to confirm")
    job_id = next(j["job_id"] for j in node.get("/api/jobs")["jobs"] if j["name"] == "client-job")
    wait_until(lambda: node.get(f"/api/jobs/{job_id}")["steps_done"] > 0, 120, "the client job to be trained")
    wait_until(lambda: node.height() >= 6, 240, "6 devnet blocks")
    miner.stop()

    status = node.status()
    height = status["height"]
    assert height >= 5
    # Every block paid our miner the subsidy its useful work earned (its steps' share of the block's
    # expected work); the client job moved escrow to it as it was trained, less the 1/8 burn.
    client_job = node.get(f"/api/jobs/{job_id}")
    assert client_job["escrow_spent"] == client_job["steps_done"] * 1_000
    earned = burned = 0
    for summary in node.get("/api/blocks?limit=200")["blocks"]:
        if summary["height"] == 0:
            continue
        block = Block.decode(node.get_bytes(f"/api/blocks/{summary['hash']}/raw"))
        header = block.header
        config = ModelConfig(dims=tuple(header.dims), batch_size=header.batch_size, lr_shift=header.lr_shift)
        earned += subsidy_paid(RULES, header.height, header.target, block.seal.steps, config.macs_per_step())
        if header.job_id.hex() == job_id:
            burned += -(-block.seal.steps * 1_000 // 8)
    assert 0 < earned <= SUBSIDY * height
    assert node.balance(MINER) == earned - client_job["escrow_left"] - burned
    # The built-in job's held-out accuracy rose as miners trained it.
    digits = next(j for j in node.get("/api/jobs")["jobs"] if j["name"] == "digits")
    history = node.get(f"/api/jobs/{digits['job_id']}")["history"]
    assert len(history) >= 2
    assert history[-1]["accuracy"] > history[0]["accuracy"] + 0.2
    assert history[-1]["steps"] > history[0]["steps"]
    blocks = node.get("/api/blocks?limit=50")["blocks"]
    assert all(b["miner"] == MINER for b in blocks if b["height"] > 0)
    assert all(b["tile"] is not None for b in blocks if b["height"] > 0)

    # Restart on the same datadir: same tip, same balances; mining resumes.
    balance = node.balance(MINER)
    assert node.stop() == 0
    node.start()
    assert node.status()["tip"] == status["tip"]
    assert node.balance(MINER) == balance
    network.add_miner(node, MINER)
    wait_until(lambda: node.height() > height, 240, "mining to resume after a restart")


def test_second_node_on_same_datadir_is_refused(network: Network) -> None:
    node = network.add_node()
    clone = network.add_node(start=False)
    clone.datadir = node.datadir
    import subprocess

    result = subprocess.run(clone.args(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "another pouw-node" in result.stderr
    assert "Traceback" not in result.stderr
    assert node.is_up()


def test_miner_gives_up_clearly_when_its_node_dies(network: Network) -> None:
    import subprocess
    import sys

    from tests.functional.framework import REPO

    node = network.add_node()
    miner = subprocess.Popen(
        [sys.executable, "-m", "node.miner_cli", "--cpu", "--node", node.url, "--datadir", str(node.datadir),
         "--address", MINER, "--retry-for", "3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until(lambda: node.height() >= 2, 120, "the miner to find blocks")
        node.kill()
        output, _ = miner.communicate(timeout=60)
    finally:
        if miner.poll() is None:
            miner.kill()
    assert miner.returncode != 0
    assert "cannot reach the node" in output and "giving up" in output
    assert "Traceback" not in output


def test_a_block_mined_under_a_shard_nonce_is_accepted(network: Network) -> None:
    """The real mining loop against a real regtest node, asking for shard 7: the node's template
    carries the nonce (inside σ and τ), the block is accepted, and a bad nonce query is a 400."""
    from node.miner import MiningLoop, NodeClient
    from pouw.backends import get_backend
    from tests.functional.framework import HttpError
    from wallet.client import RpcCredentials

    node = network.add_node()
    for bad in ("x", "-1", str(2**64), "1" * 21):
        try:
            node.get(f"/api/mining/template?address={MINER}&nonce={bad}")
        except HttpError as exc:
            assert exc.status == 400, exc
        else:
            raise AssertionError(f"nonce={bad} accepted")
    zero = node.get(f"/api/mining/template?address={MINER}")
    seven = node.get(f"/api/mining/template?address={MINER}&nonce=7")
    assert (zero["shard_nonce"], seven["shard_nonce"]) == (0, 7)
    assert zero["trajectory_seed"] != seven["trajectory_seed"]

    client = NodeClient(node.url, credentials=RpcCredentials(datadir=node.datadir))
    loop = MiningLoop(client, MINER, get_backend("cpu"))
    loop.shard_nonce = 7
    stats = loop.run(max_blocks=1)
    assert stats.blocks_found == 1 and stats.blocks_rejected == 0
    tip = node.status()["tip"]
    block = Block.decode(node.get_bytes(f"/api/blocks/{tip}/raw"))
    assert block.header.shard_nonce == 7 and block.header.height == 1
