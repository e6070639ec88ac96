"""Issue 14: a multi-part dataset published through the real wallet CLI, trained on by a real miner,
and replayed by a second node that syncs the chain from scratch.

The dataset (about 40 KB) is published in parts of 16 KiB (``--part-bytes``, a test override of the
protocol's 4 MiB) so it takes three ``DatasetChunk`` transactions and a manifest. Checked: the
dataset id is the manifest's hash, both nodes serve the same assembled bytes (equal to the client's
own encoding), the raw manifest and each part hash to their ids, a job on the dataset is mined and
finished, and the syncing node accepts every block (it verifies the job's seals against the dataset
it assembled from its own store).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chain.hashing import hash_bytes
from chain.types import decode_dataset_parts
from pouw.datasets import load_dataset, split_parts, synthetic
from tests.functional.conftest import Network
from tests.functional.framework import sync_blocks, wait_until
from tests.wallet_cli.support import WalletCli

PART_BYTES = 16 * 1024
STEPS = 8


def test_multi_part_dataset_published_trained_and_synced(network: Network, tmp_path: Path) -> None:
    node = network.add_node()
    cli = WalletCli(tmp_path, node.url, node.datadir)
    alice = cli.new("alice")
    miner = network.add_miner(node, alice)  # mines alice's parts, manifest and job
    wait_until(lambda: node.balance(alice) > 0, 60, "coins for alice")

    data = synthetic(n=480, d=64, classes=4, seed=7, test=120, hidden=16)
    npz = tmp_path / "parts.npz"
    np.savez(npz, x_train=data.x_train.astype(np.int64), y_train=data.y_train, x_test=data.x_test.astype(np.int64),
             y_test=data.y_test)
    dataset = load_dataset(str(npz))
    split = split_parts(dataset, PART_BYTES)
    assert split is not None and len(split[1]) == 3
    manifest_id = hash_bytes(split[0].encode())

    published = cli.ok("dataset", "publish", str(npz), "--part-bytes", str(PART_BYTES), "--from", "alice", "--wait",
                       "--json", timeout=120)
    assert "PUBLIC" in published.stderr and "part 3/3" in published.stderr
    answer = json.loads(published.stdout)
    assert answer["dataset_id"] == manifest_id.hex() and answer["parts"] == 3

    # The job names the same id (the wallet splits the file the same way) and publishes nothing again.
    submitted = cli.ok("job", "submit", "--dims", "64,64", "--dataset", str(npz), "--part-bytes", str(PART_BYTES),
                       "--steps", str(STEPS), "--fee-per-step", "0.001", "--from", "alice", "--json")
    assert "DatasetChunk" not in submitted.stderr and "DatasetPublish" not in submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["dataset_id"] == manifest_id.hex()
    final = json.loads(cli.ok("job", "wait", job["job_id"], "--timeout", "90", "--poll", "0.5", "--json",
                              timeout=120).stdout)
    assert final["status"] == "finished" and final["steps_done"] == STEPS

    miner.stop()  # a still tip, so the second node's sync has an end
    # A second node syncs the chain from scratch and replays every block, the job's included.
    late = network.add_node(connect=[node])
    tip = sync_blocks([node, late], timeout=90)
    assert late.get(f"/api/blocks/{tip}")["hash"] == tip
    for peer in (node, late):
        assert peer.get_bytes(f"/api/datasets/{manifest_id.hex()}") == dataset.encode()
        raw = peer.get_bytes(f"/api/datasets/{manifest_id.hex()}?raw=1")
        assert hash_bytes(raw) == manifest_id and decode_dataset_parts(raw) == split[0]
        for part_id, piece in zip(split[0].part_ids, split[1], strict=True):
            assert peer.get_bytes(f"/api/datasets/{part_id.hex()}") == piece
        view = peer.get(f"/api/jobs/{job['job_id']}")
        assert view["status"] == "finished" and view["model_hash"] == final["model_hash"]
    assert late.get(f"/api/jobs/{job['job_id']}")["history"][-1]["total"] == len(dataset.x_test)

    # The wallet fetches the dataset from the late node, checking the manifest and every part.
    (tmp_path / "late").mkdir()
    meta = json.loads(WalletCli(tmp_path / "late", late.url, late.datadir).ok(
        "job", "download", job["job_id"], "--out", str(tmp_path / "m.safetensors"), "--json").stdout)
    assert meta["dataset_id"] == manifest_id.hex() and meta["n_classes"] == "4"
