"""The node's storage against real processes: a SIGKILLed node leaves no verification worker behind,
and a corrupt store is refused at start in one clear line, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.functional.conftest import Network
from tests.functional.framework import PYTHON, REPO, free_port, wait_until


def _children(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def test_sigkill_leaves_no_child_process(network: Network) -> None:
    node = network.add_node(extra_args=["--verify-workers", "2"])
    assert node.process is not None
    pid = node.process.pid
    children = wait_until(lambda: _children(pid) if len(_children(pid)) >= 2 else None, 60,
                          "the verification workers to start")
    os.kill(pid, signal.SIGKILL)
    node.process.wait()
    node.process = None
    # a worker still importing when the node dies exits once its parent watch starts: allow for a loaded machine
    wait_until(lambda: not any(_alive(child) for child in children), 60, "every child of the node to exit")


def _node_args(datadir: Path) -> list[str]:
    return [PYTHON, "-m", "node.cli", "--datadir", str(datadir), "--preset", "regtest", "--rpc-port",
            str(free_port()), "--p2p-port", str(free_port()), "--verify-workers", "0"]


def test_a_corrupt_store_is_refused_in_one_line(network: Network) -> None:
    node = network.add_node(extra_args=["--verify-workers", "0"])
    node.stop()
    store = node.datadir / "chain"
    # put what the log holds into table files: open and close the store once more
    from store.kv import LevelDBStore

    with LevelDBStore(store) as kv:
        kv.write_batch({b"zpad%04d" % i: bytes(600) for i in range(200)})
    with LevelDBStore(store):
        pass
    table = max(store.glob("*.ldb"), key=lambda p: p.stat().st_size)
    data = bytearray(table.read_bytes())
    for offset in range(len(data) // 4, len(data) // 4 + 16):
        data[offset] ^= 0xFF
    table.write_bytes(bytes(data))
    started = time.monotonic()
    done = subprocess.run(_node_args(node.datadir), cwd=REPO, capture_output=True, timeout=120)
    assert done.returncode != 0, done
    errors = done.stderr.decode(errors="replace")
    assert "Traceback" not in errors, errors
    lines = [line for line in errors.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "corrupt" in lines[0], errors
    assert time.monotonic() - started < 120
