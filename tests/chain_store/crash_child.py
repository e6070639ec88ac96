"""Child process of the crash test: imports a list of blocks into a LevelDB chain database.

``python -m tests.chain_store.crash_child DB_DIR BLOCKS_FILE`` opens (or resumes) the database,
prints ``ready``, then imports every block of the file in order, printing one line per block it
stores (``reorg HEIGHT`` when the import changed branch) and ``done`` at the end. The parent kills
it with SIGKILL at random moments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from chain.encoding import unpack
from chain.types import Block
from store.kv import LevelDBStore
from tests.chain_store.chains import open_chaindb


def main(db_dir: str, blocks_file: str) -> None:
    blocks = [Block.decode(raw) for raw in unpack(Path(blocks_file).read_bytes())]
    with open_chaindb(LevelDBStore(db_dir)) as db:
        print("ready", flush=True)
        for block in blocks:
            result = db.import_block(block)
            if result.imported:
                print("reorg" if result.old_canonical else "stored", block.height, flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
