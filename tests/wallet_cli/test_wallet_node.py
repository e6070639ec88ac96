"""``pouw-wallet`` against a real regtest node: mine to a new wallet, send with exact balances, read the
history, buy training on digits and on a published .npz, watch it, download the model, cancel it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from chain.transition import block_pay
from chain.types import Block
from consensus.presets import REGTEST_PRESET
from pouw import modelfile
from pouw.datasets import load_dataset
from tests.functional.conftest import Network
from tests.functional.framework import TestNode, wait_until
from tests.wallet_cli.support import WalletCli
from wallet.address import encode_address
from wallet.amounts import format_amount, parse_amount
from wallet.keys import PrivateKey

SUBSIDY = REGTEST_PRESET.subsidy(1)


def minted(node: TestNode, address: str) -> int:
    """What the node's blocks mined by ``address`` credited it (v2: each block's share of the subsidy)."""
    blocks = [b for b in node.get("/api/blocks?limit=200")["blocks"] if b["height"] > 0 and b["miner"] == address]
    total = 0
    for summary in blocks:
        block = Block.decode(node.get_bytes(f"/api/blocks/{summary['hash']}/raw"))
        total += block_pay(REGTEST_PRESET.chain_rules, block.header, block.seal.steps, 0, builtin=True)
    return total
CAROL = encode_address(PrivateKey(hashlib.sha256(b"wallet-cli-carol").digest()).address)
"""A third party that mines the blocks confirming our transactions, so our balances stay exact."""
STEPS = 1_000_000
"""A budget no test run can exhaust, so the job is still active when it is cancelled."""


def floor_fee_of(view: dict[str, Any]) -> int:
    return REGTEST_PRESET.min_fee + REGTEST_PRESET.fee_per_byte * int(view["size"])


def account_txs(node: TestNode, address: str, kind: str) -> list[dict[str, Any]]:
    return [tx for tx in node.get(f"/api/accounts/{address}")["history"] if tx["kind"] == kind]


def field(output: str, name: str) -> str:
    """The value of a ``name  value`` line of ``balance`` or ``job status``."""
    match = re.search(rf"^{name} +(.*)$", output, re.MULTILINE)
    assert match is not None, (name, output)
    return match.group(1)


def test_mine_send_history_and_jobs(network: Network, tmp_path: Path) -> None:
    node = network.add_node()
    cli = WalletCli(tmp_path, node.url, node.datadir)
    alice, bob = cli.new("alice"), cli.new("bob")

    # Mine to alice's new wallet; every block so far is hers and carries nothing but the subsidy.
    miner = network.add_miner(node, alice)
    wait_until(lambda: node.height() >= 2, 60, "two blocks for alice")
    miner.stop()
    # (read as a pair that agrees: a block submitted just before the stop may land between two reads)
    funds = wait_until(lambda: (b := node.balance(alice)) == minted(node, alice) and b, 10, "alice's rewards")
    shown = cli.ok("balance", "alice").stdout
    assert field(shown, "address") == alice
    assert re.fullmatch(r"\d+\.\d{8}", field(shown, "balance"))
    assert parse_amount(field(shown, "balance")) == funds
    assert field(shown, "nonce") == "0" and field(shown, "pending") == "0"

    # From now on only carol mines, always the job that pays best per MAC: alice's and bob's
    # balances change only by their own transactions.
    network.add_miner(node, CAROL)

    # Send: alice pays exactly amount + the floor fee, bob gets the amount.
    sent = cli.ok("send", bob, "1.5", "--memo", "thanks", "--from", "alice", "--wait").stdout.splitlines()
    txid = sent[0]
    view = node.get(f"/api/tx/{txid}")
    assert view["status"] == "confirmed" and view["nonce"] == 0 and view["memo"] == "thanks"
    assert sent[1] == f"confirmed at height {view['height']} (block {view['block_hash']})"
    assert view["fee"] == floor_fee_of(view)
    assert node.balance(alice) == funds - 150_000_000 - view["fee"]
    assert node.balance(bob) == 150_000_000
    assert field(cli.ok("balance", bob).stdout, "balance") == "1.50000000"  # an address works as well as a name

    alice_rows = [line for line in cli.ok("history", "alice").stdout.splitlines() if txid in line]
    assert len(alice_rows) == 1
    assert "-1.50000000" in alice_rows[0] and f"to {bob}" in alice_rows[0] and format_amount(view["fee"]) in alice_rows[0]
    bob_rows = [line for line in cli.ok("history", "bob").stdout.splitlines() if txid in line]
    assert len(bob_rows) == 1 and "+1.50000000" in bob_rows[0] and f"from {alice}" in bob_rows[0]

    # Buy training on digits; carol's first miner picks the paying job and trains it.
    before_job = node.balance(alice)
    submitted = cli.ok("job", "submit", "--dims", "64,128,64", "--dataset", "digits", "--steps", str(STEPS),
                       "--fee-per-step", "0.00000001", "--name", "cli-job", "--from", "alice", "--wait")
    job_id = submitted.stdout.splitlines()[0]
    job = node.get(f"/api/jobs/{job_id}")
    assert (job["name"], job["owner"], job["status"]) == ("cli-job", alice, "active")
    assert job["spec"]["dims"] == [64, 128, 64] and job["spec"]["total_steps"] == STEPS
    wait_until(lambda: node.get(f"/api/jobs/{job_id}")["steps_done"] > 0, 60, "the job to be trained")

    status = cli.ok("job", "status", job_id).stdout
    steps = re.fullmatch(r"(\d+) done, (\d+) left", field(status, "steps"))
    assert steps is not None
    done, left = int(steps[1]), int(steps[2])
    assert done >= 1 and done + left == STEPS
    assert field(status, "escrow").startswith(f"{format_amount(left)} held, {format_amount(done)} paid to miners")
    accuracy = re.fullmatch(r"(\d+\.\d\d)% held-out \((\d+)/(\d+)\) after (\d+) steps, height \d+", field(status, "accuracy"))
    assert accuracy is not None and int(accuracy[3]) == len(load_dataset("digits").y_test)

    model_path = tmp_path / "models" / "model.safetensors"
    model_path.parent.mkdir()
    cli.ok("job", "download", job_id, "--out", str(model_path))
    model = modelfile.load(model_path)
    assert [w.shape for w in model.state.weights] == [(64, 128), (128, 64)]
    assert model.step >= 1 and model.job_id == job_id and model.n_classes == 10
    assert list(model_path.parent.iterdir()) == [model_path]  # no temporary file left behind

    # A dataset of one's own: published first (nonce 0), then the job on it (nonce 1). Its smaller
    # model pays more per MAC, so carol turns to it, and alice's cancel can be mined (nodes keep a
    # cancel out of blocks that train the cancelled job).
    rng = np.random.default_rng(7)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 64, (256, 50)), y_train=rng.integers(0, 4, 256),
             x_test=rng.integers(0, 64, (64, 50)), y_test=rng.integers(0, 4, 64))
    own = cli.ok("job", "submit", "--dims", "64,64", "--dataset", str(npz), "--steps", str(STEPS),
                 "--fee-per-step", "0.00000001", "--from", "bob", "--wait")
    dataset = load_dataset(str(npz))
    assert "publishing dataset" in own.stderr
    assert node.get_bytes(f"/api/datasets/{dataset.id.hex()}") == dataset.encode()
    assert node.get(f"/api/jobs/{own.stdout.split()[0]}")["spec"]["dataset_id"] == dataset.id.hex()
    published = account_txs(node, bob, "dataset_publish")
    assert [tx["nonce"] for tx in published] == [0] and published[0]["fee"] == floor_fee_of(published[0])
    again = cli.ok("job", "submit", "--dims", "64,64", "--dataset", str(npz), "--steps", "10",
                   "--fee-per-step", "0", "--from", "bob")
    assert "publishing dataset" not in again.stderr  # already on chain: only the JobSubmit this time

    # Cancel: the unspent escrow comes back; alice paid two fees and one unit per step trained.
    cancelled = cli.ok("job", "cancel", job_id, "--from", "alice", "--wait")
    job = node.get(f"/api/jobs/{job_id}")
    assert job["status"] == "cancelled" and job["escrow_left"] == 0
    assert f"refunded {format_amount(STEPS - job['steps_done'])}" in cancelled.stderr
    fees = sum(int(tx["fee"]) for kind in ("job_submit", "job_cancel") for tx in account_txs(node, alice, kind))
    assert node.balance(alice) == before_job - fees - job["steps_done"]
    assert field(cli.ok("job", "status", job_id).stdout, "status") == "cancelled"
    assert f"job {job_id}" in cli.ok("history", "alice").stdout
