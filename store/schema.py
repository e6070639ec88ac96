"""Every key layout the node writes to its LevelDB, in one place (the state keys themselves are
consensus and live in :mod:`chain.schema`).

Block-store keys (one LevelDB per node, see :mod:`store.kv` and :mod:`store.chaindb`; the
format and its crash-consistency argument are in docs/protocol.md Part V):

==========  =================================  ===============================================
prefix      key                                value
==========  =================================  ===============================================
``s``       ``s || state key``                 the head state's value for that state key
                                               (state keys: :mod:`chain.schema`)
``b``       ``b || block_hash(32)``            :class:`chain.types.Block`
``H``       ``H || block_hash(32)``            :class:`chain.types.SealedHeader` (header + seal, no body)
``i``       ``i || block_hash(32)``            :class:`store.chaindb.BlockIndex`
``c``       ``c || height(8, big-endian)``     hash of the canonical block at that height
``u``       ``u || block_hash(32)``            undo record of a canonical block
``t``       ``t || txid(32)``                  :class:`store.chaindb.TxLocation` (canonical txs)
``x``       ``x || addr(20) || h(8) || i(4)``  txid of the canonical tx at height h, position i that
                                               sends to or from addr
``m``       ``m || name``                      metadata: ``head``, ``genesis``, ``schema``
``w``       ``w || model_hash(32)``            node index: a job's model (content-addressed)
``e``       ``e || job_id(32) || height(8)``   node index: a job's evaluation history
==========  =================================  ===============================================
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Block store

DB_STATE = b"s"
DB_BLOCK = b"b"
DB_HEADER = b"H"
DB_INDEX = b"i"
DB_CANONICAL = b"c"
DB_UNDO = b"u"
DB_TX = b"t"
DB_META = b"m"
DB_ADDRESS_TX = b"x"

HEAD_KEY = DB_META + b"head"
"""Hash of the head block."""
GENESIS_KEY = DB_META + b"genesis"
"""Hash of the genesis block the store was created with."""
SCHEMA_KEY = DB_META + b"schema"
"""Version of this layout, one byte; bumped by any change that needs a migration."""
STORE_SCHEMA_VERSION = b"\x01"
PROBE_KEY = DB_META + b"probe"
"""Written to test that the store accepts writes again after one failed (disk full)."""


def db_state_key(state_key: bytes) -> bytes:
    return DB_STATE + state_key


def block_key(block_hash: bytes) -> bytes:
    return DB_BLOCK + block_hash


def header_key(block_hash: bytes) -> bytes:
    return DB_HEADER + block_hash


def index_key(block_hash: bytes) -> bytes:
    return DB_INDEX + block_hash


def canonical_key(height: int) -> bytes:
    return DB_CANONICAL + height.to_bytes(8, "big")


def undo_key(block_hash: bytes) -> bytes:
    return DB_UNDO + block_hash


def tx_key(txid: bytes) -> bytes:
    return DB_TX + txid


def address_tx_key(address: bytes, height: int, position: int) -> bytes:
    return DB_ADDRESS_TX + address + height.to_bytes(8, "big") + position.to_bytes(4, "big")


# ---------------------------------------------------------------------------------------------
# Node-side indexes (not consensus; rebuilt from blocks if lost)

DB_MODEL = b"w"
"""``w || model_hash(32)`` → encoded :class:`pouw.model.ModelState` (content-addressed)."""
DB_EVAL = b"e"
"""``e || job_id(32) || height(8)`` → ``pack([steps_done, correct, total, loss])`` of the job's model."""


def model_key(model_hash: bytes) -> bytes:
    return DB_MODEL + model_hash


def eval_key(job_id: bytes, height: int) -> bytes:
    return DB_EVAL + job_id + height.to_bytes(8, "big")
