"""Crash safety: SIGKILL a process importing blocks (reorgs included) at random moments, many times.

After every kill the LevelDB store must reopen at a consistent head: its state equal to a replay of
its canonical chain through the transition, the canonical index contiguous, an undo record for every
canonical block and no stale records. The seed is printed (shown on failure); set
``POUW_CRASH_SEED`` to rerun one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chain.encoding import pack
from chain.state import State
from chain.types import Block
from store.kv import LevelDBStore
from tests.chain_store.chains import assert_consistent, grow, heavy_block, open_chaindb
from tests.factories import GENESIS

ROOT = Path(__file__).resolve().parents[2]
MIN_KILLS = 20
MAX_LINES_BEFORE_KILL = 25
"""A run is killed after reading 0..this many 'stored' lines, plus a random delay of up to 2 ms."""


def crash_scenario() -> tuple[list[Block], Block]:
    """311 blocks in import order with three reorgs (depths 20, 40 and 70); and the final head."""
    a = grow(60, salt=b"A", sender=0, recipient=1)  # 1..60
    b = grow(40, start=(a.blocks[39], a.states[39]), salt=b"B", sender=2, recipient=3)  # 41..80
    c = grow(60, start=(a.blocks[49], a.states[49]), salt=b"C", sender=0, recipient=2)  # 51..110
    heavy, heavy_state = heavy_block(b.blocks[-1], b.states[-1], target=GENESIS.target >> 6)  # 81
    d = grow(150, start=(heavy, heavy_state), salt=b"D", sender=1, recipient=0)  # 82..231
    return [*a.blocks, *b.blocks, *c.blocks, heavy, *d.blocks], d.blocks[-1]


def start_child(db_dir: Path, blocks_file: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.chain_store.crash_child", str(db_dir), str(blocks_file)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    if child.stdout.readline() != "ready\n":
        child.kill()
        raise AssertionError(f"child did not start: {child.communicate()[1]}")
    return child


@pytest.mark.timeout(120)
def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path: Path) -> None:
    seed = int(os.environ.get("POUW_CRASH_SEED", random.randrange(1 << 32)))
    print(f"crash test seed: {seed}")
    rng = random.Random(seed)
    blocks, final_tip = crash_scenario()
    blocks_file, db_dir = tmp_path / "blocks", tmp_path / "db"
    blocks_file.write_bytes(pack([block.encode() for block in blocks]))
    replayed: dict[bytes, State] = {}
    kills = reorg_runs = 0
    previous_head = blocks[0].header.prev_hash

    while kills < MIN_KILLS:
        child = start_child(db_dir, blocks_file)
        assert child.stdout is not None
        for _ in range(rng.randint(0, MAX_LINES_BEFORE_KILL)):
            if child.stdout.readline() in ("", "done\n"):
                break
        time.sleep(rng.uniform(0, 0.002))
        assert child.poll() is None, f"seed {seed}: the child finished before {MIN_KILLS} kills"
        child.send_signal(signal.SIGKILL)
        child.communicate()
        kills += 1

        store = LevelDBStore(db_dir)
        with open_chaindb(store) as db:
            assert_consistent(db, store, replayed)
            if not db.is_canonical(previous_head):
                reorg_runs += 1
            previous_head = db.head.hash

    child = start_child(db_dir, blocks_file)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and out.endswith("done\n"), err
    store = LevelDBStore(db_dir)
    with open_chaindb(store) as db:
        assert db.head.hash == final_tip.hash
        assert_consistent(db, store, replayed)
    print(f"{kills} kills, {reorg_runs} of them after a run that committed a reorg")
    assert reorg_runs >= 1, f"seed {seed}: no killed run committed a reorg"
