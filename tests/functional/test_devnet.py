"""``make devnet``'s entry point, bounded: three nodes on one tip, a confirmed transfer with exact
balances, two jobs with progress, and no process left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from consensus.presets import DEVNET_PRESET
from node.devnet import TRANSFER
from tests.functional.framework import REPO, TIMEOUT_FACTOR


def test_make_devnet_entry_point(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    result = subprocess.run(
        [sys.executable, "-m", "node.devnet", "--dir", str(root), "--blocks", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=600 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all devnet processes stopped" in result.stdout
    summary = json.loads((root / "summary.json").read_text())

    assert len(summary["nodes"]) == 3
    assert len({node["tip"] for node in summary["nodes"]}) == 1
    assert all(node["peers"] >= 1 for node in summary["nodes"])
    assert summary["transfer"]["status"] == "confirmed"

    height = summary["height"]
    jobs = {job["name"]: job for job in summary["jobs"]}
    assert jobs["digits"]["steps"] > 0 and jobs["devnet-small-job"]["steps"] > 0
    second = next(j for j in json.loads(json.dumps(summary["jobs"])) if j["name"] == "devnet-small-job")
    assert second["steps"] > 0
    # Alice mined every block; bob only received the transfer. Alice holds what her blocks minted to
    # her (their useful work's share of the subsidy, job pay less the burn) less the transfer and
    # what is left in the second job's escrow.
    assert summary["balances"]["bob"] == TRANSFER
    assert set(summary["blocks_per_miner"]) == {summary["addresses"]["alice"]}
    minted = summary["minted"][summary["addresses"]["alice"]]
    assert 0 < minted <= DEVNET_PRESET.subsidy(1) * height + 6000 * 100
    assert summary["balances"]["alice"] == minted - TRANSFER - 6000 * 100

    # No stray processes: nothing still runs from this devnet's directory.
    leftover = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", leftover.stdout


def test_make_devnet_stops_cleanly_on_interrupt(tmp_path: Path) -> None:
    import signal
    import time

    root = tmp_path / "devnet"
    process = subprocess.Popen([sys.executable, "-m", "node.devnet", "--dir", str(root)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300 * TIMEOUT_FACTOR
    while not (root / "logs" / "miner.log").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert "all devnet processes stopped" in output, output[-2000:]
    leftover = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", leftover.stdout
