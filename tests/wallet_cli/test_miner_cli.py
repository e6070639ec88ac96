"""``pouw-mine`` refuses bad setups at once with a clear message, exit status != 0 and no traceback."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from tests.conftest import cuda_available
from tests.functional.framework import free_port
from tests.wallet_cli.support import run_module
from wallet.address import encode_address
from wallet.keys import PrivateKey

ADDRESS = encode_address(PrivateKey(hashlib.sha256(b"wallet-cli-miner").digest()).address)


def mine(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("node.miner_cli", *args, timeout=60)


def assert_refused(result: subprocess.CompletedProcess[str], fragment: str, status: int = 1) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"Error: {fragment}" or fragment in result.stderr.splitlines()[-1]


def test_unreachable_node() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = mine("--cpu", "--node", dead, "--address", ADDRESS)
    assert_refused(result, f"cannot reach the node at {dead}")
    assert result.stderr.count("\n") == 1  # the one error line, no retries on the first contact
    assert time.monotonic() - started < 30


def test_bad_address() -> None:
    typo = ADDRESS[:-1] + ("q" if ADDRESS[-1] != "q" else "p")
    assert_refused(mine("--cpu", "--address", typo), "bad --address: checksum mismatch")


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")
def test_gpu_without_cuda() -> None:
    assert_refused(mine("--gpu", "0", "--address", ADDRESS), "CUDA is not available")


def test_cpu_and_gpu_together() -> None:
    assert_refused(mine("--cpu", "--gpu", "0", "--address", ADDRESS), "choose --cpu or --gpu N, not both", status=2)
