"""The console scripts answer --help; pouw-node reads a TOML --config that mirrors its flags and
rejects bad ones with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.framework import REPO, TestNode, free_port, wait_until

MODULES = {"pouw-node": "node.cli", "pouw-mine": "node.miner_cli", "pouw-wallet": "wallet.cli",
           "pouw-bench": "benchmarks.cli"}


def run(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("script", sorted(MODULES))
def test_every_console_script_answers_help(script: str) -> None:
    result = run(MODULES[script], "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout or "usage" in result.stdout


def test_node_config_file(tmp_path: Path) -> None:
    rpc, p2p = free_port(), free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'preset = "regtest"\ndatadir = "{tmp_path / "data"}"\nrpc_port = {rpc}\n'
                      f'p2p_port = {p2p}\nlog_level = "warning"\n')
    node = TestNode(0, tmp_path / "data", "regtest")
    node.rpc_port, node.p2p_port = rpc, p2p
    process = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(config)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = wait_until(lambda: node.status(), 60, "the configured node")
        assert status["preset"] == "regtest"
        assert (tmp_path / "data" / "chain").is_dir()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"RPC http://127.0.0.1:{rpc}" in output and f"p2p 127.0.0.1:{p2p}" in output


@pytest.mark.parametrize(("text", "message"), [
    ('preset = "regtest"\nbogus = 1\n', "unknown config keys"),
    ('preset = "regtest"\nrpc_port = \n', "not valid TOML"),
    ('preset = "nonsense"\n', "unknown preset"),
])
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run("node.cli", "--config", str(config), "--datadir", str(tmp_path / "d"))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_are_refused(tmp_path: Path) -> None:
    result = run("node.cli", "--datadir", str(tmp_path), "--connect", "nowhere")
    assert result.returncode != 0 and "HOST:PORT" in result.stderr and "Traceback" not in result.stderr
