"""Issue 14 through the real CLIs against a regtest node: a float CSV published (quantized, with a
public-data warning), a pending job shown as pending, ``job list``, ``job wait`` until the job
finishes, ``job download`` to safetensors, and ``job predict`` equal to the node's held-out
evaluation, whatever the rows batched together; ``--json`` and ``--version``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris

from pouw import modelfile
from pouw.datasets import load_dataset, split_rows
from tests.functional.conftest import Network
from tests.functional.framework import wait_until
from tests.wallet_cli.support import WalletCli, run_module
from wallet.address import encode_address
from wallet.keys import PrivateKey

CAROL = encode_address(PrivateKey(hashlib.sha256(b"wallet-cli-models-carol").digest()).address)
STEPS = 40


def write_iris_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    bunch = load_iris()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    lines = ["sepal_length,sepal_width,petal_length,petal_width,label"]
    lines += [",".join([*(repr(float(v)) for v in row), str(int(label))]) for row, label in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return x, y


def test_versions() -> None:
    for module, name in (("wallet.cli", "pouw-wallet"), ("node.cli", "pouw-node"), ("node.miner_cli", "pouw-mine"),
                         ("benchmarks.cli", "pouw-bench")):
        result = run_module(module, "--version")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{name} 0."), result.stdout


def test_float_csv_job_lifecycle_download_and_predict(network: Network, tmp_path: Path) -> None:
    node = network.add_node()
    cli = WalletCli(tmp_path, node.url, node.datadir)
    alice = cli.new("alice")
    miner = network.add_miner(node, alice)
    wait_until(lambda: node.balance(alice) > 0, 60, "coins for alice")
    miner.stop()

    csv = tmp_path / "iris.csv"
    x, y = write_iris_csv(csv)
    submitted = cli.ok("job", "submit", "--dims", "64,64", "--dataset", str(csv), "--steps", str(STEPS),
                       "--fee-per-step", "0.001", "--batch", "64", "--lr-shift", "6", "--from", "alice", "--json")
    assert "PUBLIC" in submitted.stderr
    answer = json.loads(submitted.stdout)
    job_id, dataset_id = answer["job_id"], answer["dataset_id"]

    # No miner runs: the job's submit waits in the mempool, and the wallet says so.
    status = json.loads(cli.ok("job", "status", job_id, "--json").stdout)
    assert status["status"] == "pending" and status["steps_done"] == 0
    assert "pending" in cli.ok("job", "status", job_id).stdout
    mine = json.loads(cli.ok("job", "list", "alice", "--json").stdout)["jobs"]
    assert [(j["job_id"], j["status"]) for j in mine] == [(job_id, "pending")]
    everyone = json.loads(cli.ok("job", "list", "--all", "--json").stdout)["jobs"]
    assert len(everyone) > len(mine)  # the built-in job is someone else's

    network.add_miner(node, CAROL)
    waited = cli.ok("job", "wait", job_id, "--timeout", "150", "--poll", "0.5", "--json", timeout=200)
    final = json.loads(waited.stdout)
    assert final["status"] == "finished" and final["steps_done"] == STEPS
    assert "steps" in waited.stderr  # progress lines
    assert json.loads(cli.ok("job", "list", "alice", "--json").stdout)["jobs"][0]["status"] == "finished"

    # The published dataset is the quantized CSV, its scaling recorded on chain.
    dataset = load_dataset(str(csv))
    assert dataset.id.hex() == dataset_id and dataset.scaling is not None
    assert node.get_bytes(f"/api/datasets/{dataset_id}") == dataset.encode()

    path = tmp_path / "iris.safetensors"
    meta = json.loads(cli.ok("job", "download", job_id, "--out", str(path), "--json").stdout)
    assert meta["dims"] == "64,64" and meta["n_classes"] == "3" and meta["job_id"] == job_id
    assert meta["dataset_id"] == dataset_id and meta["step"] == str(STEPS) and meta["format"] == "pouw/model/1"
    model = modelfile.load(path)
    assert model.feature_scaling == dataset.scaling

    # predict on the float held-out rows equals the node's own evaluation of the final model.
    _, _, x_test, y_test = split_rows(x, y, 0.2, 0)
    test_file = tmp_path / "held-out.npz"
    np.savez(test_file, x=x_test, y=y_test)
    predicted = json.loads(cli.ok("job", "predict", job_id, "--input", str(test_file), "--labels", "--json").stdout)
    history = node.get(f"/api/jobs/{job_id}")["history"]
    assert history[-1]["steps"] == STEPS
    assert (predicted["correct"], predicted["total"]) == (history[-1]["correct"], history[-1]["total"])
    classes = np.asarray(predicted["predictions"])
    assert classes.max() < 3  # argmax over the dataset's 3 classes, never a padding output

    # The answer for a row does not depend on the rows batched with it (file, text output, one row).
    from_file = cli.ok("job", "predict", str(path), "--input", str(test_file)).stdout.split()
    assert [int(c) for c in from_file] == list(classes)
    reversed_file = tmp_path / "reversed.npz"
    np.savez(reversed_file, x=x_test[::-1])
    reversed_out = json.loads(cli.ok("job", "predict", str(path), "--input", str(reversed_file), "--json").stdout)
    assert reversed_out["predictions"][::-1] == list(classes)
    one = [int(model.predict(row[None, :])[0]) for row in x_test]
    assert one == list(classes)
