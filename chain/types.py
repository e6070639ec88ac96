"""The chain's values: transactions, job specs, headers, seals and blocks.

Each type is a frozen, slotted dataclass that owns its canonical bytes (``encode``/``decode``, see
:mod:`chain.encoding`) and its hashes. The header is kept apart from the seal (py-evm's
header-without-seal pattern): the header is the block template, fixed before mining; everything
the mining outcome decides lives in :class:`Seal`.

Protocol v2 (docs/protocol.md Part I §5, Part IV §6, §12):

* ``Header.lottery_seed`` is σ, the lottery seed. It covers only what fixes the work: version,
  height, parent, target, miner, job, start state, the job's model config and the miner's
  ``shard_nonce`` (which is in the trajectory seed τ too, so each nonce is a shard of its own). The timestamp and the
  transaction root are in the header but outside σ, so re-stamping a block or changing its
  transactions draws no new ticket.
* ``Header.hash`` covers every header field; ``Seal.work_hash`` commits to the body's ``work``
  bytes and ``Header.tx_root`` to its transactions, so the block hash
  ``H("pouw/block", Header.hash || H("pouw/seal", seal))`` fixes the whole block.
* The header carries the job's model config (``dims``, ``batch_size``, ``lr_shift``), so the
  winning tile of any header is checkable from the header and its seal alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from chain.encoding import (
    BigUInt,
    Bytes,
    Container,
    ListOf,
    Nested,
    Text,
    UInt,
    Union,
    pack,
    unpack,
    wire,
)
from chain.errors import InvalidTransaction, Reason, ValidationError
from chain.hashing import address_hash, hash_bytes, merkle_root_of_hashes, tagged_hash

BLOCK_VERSION = 3
"""Version of the block format and rules described here (v1 had σ over the whole header; v2 hashed
operand leaves and tickets with BLAKE2b, v3 with keyed BLAKE3 so that a GPU computes them)."""

HASH32 = Bytes(32)
ADDRESS = Bytes(20)
ZERO_HASH = bytes(32)
ZERO_ADDRESS = bytes(20)

COIN = 10**8
"""Base units per coin: amounts are integers of base units, shown with 8 fixed decimals."""

MAX_MEMO_BYTES = 256
MAX_NAME_BYTES = 64
MAX_LAYERS = 8
MAX_DATASET_BYTES = 4 * 1024 * 1024
MAX_BLOCK_TXS = 10_000
MAX_PROOF_BYTES = 256 * 1024
MAX_WORK_BYTES = 16 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Transactions


@dataclass(frozen=True, slots=True)
class JobSpec(Container):
    """What a client buys: an integer MLP of these widths trained on a dataset (see docs/protocol.md)."""

    dims: tuple[int, ...] = wire(ListOf(UInt(16), MAX_LAYERS + 1))
    dataset_id: bytes = wire(HASH32)
    batch_size: int = wire(UInt(16))
    lr_shift: int = wire(UInt(8))
    total_steps: int = wire(UInt(32))
    fee_per_step: int = wire(UInt(64))

    @property
    def escrow(self) -> int:
        """What the client locks: the fee for every step of the budget."""
        return self.total_steps * self.fee_per_step


@dataclass(frozen=True, slots=True)
class Transfer(Container):
    chain_id: int = wire(UInt(32))
    nonce: int = wire(UInt(64))
    fee: int = wire(UInt(64))
    to: bytes = wire(ADDRESS)
    amount: int = wire(UInt(64))
    memo: bytes = wire(Bytes(max_len=MAX_MEMO_BYTES))


@dataclass(frozen=True, slots=True)
class JobSubmit(Container):
    """Opens a training job and escrows ``spec.total_steps * spec.fee_per_step`` from the sender."""

    chain_id: int = wire(UInt(32))
    nonce: int = wire(UInt(64))
    fee: int = wire(UInt(64))
    spec: JobSpec = wire(Nested(JobSpec))
    name: str = wire(Text(MAX_NAME_BYTES))


@dataclass(frozen=True, slots=True)
class JobCancel(Container):
    """Ends the sender's active job and refunds its unspent escrow."""

    chain_id: int = wire(UInt(32))
    nonce: int = wire(UInt(64))
    fee: int = wire(UInt(64))
    job_id: bytes = wire(HASH32)


@dataclass(frozen=True, slots=True)
class DatasetPublish(Container):
    """Puts a dataset on chain so every validator has it; its id is the content hash of ``data``."""

    chain_id: int = wire(UInt(32))
    nonce: int = wire(UInt(64))
    fee: int = wire(UInt(64))
    name: str = wire(Text(MAX_NAME_BYTES))
    data: bytes = wire(Bytes(max_len=MAX_DATASET_BYTES))

    @property
    def dataset_id(self) -> bytes:
        return dataset_id_of(self.data)


@dataclass(frozen=True, slots=True)
class DatasetChunk(Container):
    """One part of a multi-part dataset (docs/protocol.md Part I §4): ``data`` is itself a canonical
    dataset record (a slice of the dataset's rows); its id is ``dataset_id_of(data)``. A
    ``DatasetPublish`` whose data is a ``pouw/dataset-parts/1`` manifest assembles parts."""

    chain_id: int = wire(UInt(32))
    nonce: int = wire(UInt(64))
    fee: int = wire(UInt(64))
    data: bytes = wire(Bytes(max_len=MAX_DATASET_BYTES))

    @property
    def part_id(self) -> bytes:
        return dataset_id_of(self.data)


TxBody: TypeAlias = Transfer | JobSubmit | JobCancel | DatasetPublish | DatasetChunk
TX_BODY = Union({1: Transfer, 2: JobSubmit, 3: JobCancel, 4: DatasetPublish, 5: DatasetChunk})

DATASET_PARTS_TAG = "pouw/dataset-parts/1"
MAX_DATASET_PARTS = 64
"""Parts one manifest may list: 64 x 4 MiB = 256 MiB at most per dataset."""


@dataclass(frozen=True, slots=True)
class DatasetParts:
    """A multi-part dataset's manifest: ``pack([DATASET_PARTS_TAG, n_classes, n_features, [part ids]])``."""

    n_classes: int
    n_features: int
    part_ids: tuple[bytes, ...]

    def encode(self) -> bytes:
        return pack([DATASET_PARTS_TAG, self.n_classes, self.n_features, list(self.part_ids)])


def decode_dataset_parts(data: bytes) -> DatasetParts | None:
    """The manifest in ``data``, or None when ``data`` does not start as one (then it is an ordinary
    dataset record). A record tagged as a manifest but malformed raises InvalidTransaction."""
    if not data[1:].startswith(pack(DATASET_PARTS_TAG)):
        return None
    try:
        obj = unpack(data, max_size=len(data))
    except ValidationError as exc:
        raise InvalidTransaction(Reason.BAD_DATASET, f"malformed dataset manifest: {exc.detail}") from exc
    if type(obj) is not list or len(obj) != 4 or not all(type(v) is int for v in obj[1:3]) or type(obj[3]) is not list:
        raise InvalidTransaction(Reason.BAD_DATASET, "a manifest is [tag, n_classes, n_features, [part ids]]")
    ids = obj[3]
    if not 1 <= len(ids) <= MAX_DATASET_PARTS or not all(type(i) is bytes and len(i) == 32 for i in ids):
        raise InvalidTransaction(Reason.BAD_DATASET, f"a manifest lists 1..{MAX_DATASET_PARTS} 32-byte part ids")
    if len(set(ids)) != len(ids):
        raise InvalidTransaction(Reason.BAD_DATASET, "a manifest lists a part twice")
    parts = DatasetParts(n_classes=obj[1], n_features=obj[2], part_ids=tuple(ids))
    if parts.encode() != data:
        raise InvalidTransaction(Reason.BAD_DATASET, "the manifest is not in canonical form")
    return parts


def dataset_id_of(data: bytes) -> bytes:
    """Content id of a published dataset's canonical bytes (``pouw.datasets.Dataset.encode``)."""
    return hash_bytes(data)


def signing_digest(body: TxBody) -> bytes:
    """The 32 bytes a sender signs. The chain id is a field of every body, so it is always signed."""
    return tagged_hash("pouw/tx-sig", pack(TX_BODY.to_wire(body)))


@dataclass(frozen=True, slots=True)
class SignedTx(Container):
    body: TxBody = wire(TX_BODY)
    pubkey: bytes = wire(Bytes(33))
    signature: bytes = wire(Bytes(64))

    @property
    def txid(self) -> bytes:
        return tagged_hash("pouw/txid", self.encode())

    @property
    def sender(self) -> bytes:
        return address_hash(self.pubkey)

    @property
    def digest(self) -> bytes:
        return signing_digest(self.body)


def job_id_of(submit_txid: bytes) -> bytes:
    """A job is named by the transaction that opened it."""
    return tagged_hash("pouw/job-id", submit_txid)


# ---------------------------------------------------------------------------------------------
# Headers, seals, blocks


@dataclass(frozen=True, slots=True)
class Header(Container):
    """Everything fixed before mining (the block template). σ is ``lottery_seed``; see the module doc."""

    version: int = wire(UInt(16))
    height: int = wire(UInt(64))
    prev_hash: bytes = wire(HASH32)
    timestamp: int = wire(UInt(64))
    tx_root: bytes = wire(HASH32)
    target: int = wire(BigUInt(32))
    miner: bytes = wire(ADDRESS)
    job_id: bytes = wire(HASH32)
    start_state_hash: bytes = wire(HASH32)
    dims: tuple[int, ...] = wire(ListOf(UInt(16), MAX_LAYERS + 1), default=())
    """The job's model widths (must equal its spec's): the shapes of every matmul a step runs.
    Empty (with zero batch size and lr shift) only in the genesis header."""
    batch_size: int = wire(UInt(16), default=0)
    lr_shift: int = wire(UInt(8), default=0)
    shard_nonce: int = wire(UInt(64), default=0)
    """Chosen by the miner: names its shard of the job. It is inside σ and inside the trajectory
    seed τ (:func:`consensus.seal.trajectory_seed`), so a new nonce is a new trajectory trained
    from the job's start state: more draws per tip, each still paid by a training step of its own."""

    @property
    def lottery_seed(self) -> bytes:
        """σ = H("pouw/sigma", pack([version, height, prev_hash, target, miner, job_id,
        start_state_hash, dims, batch_size, lr_shift, shard_nonce])): the timestamp and tx root are
        left out."""
        return tagged_hash(
            "pouw/sigma",
            pack([
                self.version, self.height, self.prev_hash, self.target.to_bytes(32, "big"), self.miner,
                self.job_id, self.start_state_hash, list(self.dims), self.batch_size, self.lr_shift,
                self.shard_nonce,
            ]),
        )

    @property
    def hash(self) -> bytes:
        """Hash of every header field (the template id; half of the block hash)."""
        return tagged_hash("pouw/header", self.encode())


def work_hash_of(work: bytes) -> bytes:
    """The commitment a seal makes to its block's ``work`` bytes."""
    return tagged_hash("pouw/work", work)


@dataclass(frozen=True, slots=True)
class Seal(Container):
    """What mining decided: the job progress, its commitments, the post-state root and the work proof.

    ``prefix_root`` is the running trajectory root the winning step was drawn under: the Merkle
    root of every checkpoint leaf but the last (see :mod:`pouw.proof`). ``work_hash`` commits to the
    block's ``work`` bytes.
    """

    steps: int = wire(UInt(32))
    final_state_hash: bytes = wire(HASH32)
    trajectory_root: bytes = wire(HASH32)
    prefix_root: bytes = wire(HASH32)
    state_root: bytes = wire(HASH32)
    work_hash: bytes = wire(HASH32)
    proof: bytes = wire(Bytes(max_len=MAX_PROOF_BYTES))


def block_hash_of(header: Header, seal: Seal) -> bytes:
    return tagged_hash("pouw/block", header.hash + tagged_hash("pouw/seal", seal.encode()))


@dataclass(frozen=True, slots=True)
class SealedHeader(Container):
    """A block without its body: enough to check its work (what headers-first sync moves)."""

    header: Header = wire(Nested(Header))
    seal: Seal = wire(Nested(Seal))

    @property
    def hash(self) -> bytes:
        return block_hash_of(self.header, self.seal)


@dataclass(frozen=True, slots=True)
class Block(Container):
    header: Header = wire(Nested(Header))
    seal: Seal = wire(Nested(Seal))
    txs: tuple[SignedTx, ...] = wire(ListOf(Nested(SignedTx), MAX_BLOCK_TXS))
    work: bytes = wire(Bytes(max_len=MAX_WORK_BYTES))

    @property
    def hash(self) -> bytes:
        return block_hash_of(self.header, self.seal)

    @property
    def height(self) -> int:
        return self.header.height


def tx_root(txs: tuple[SignedTx, ...] | list[SignedTx]) -> bytes:
    return merkle_root_of_hashes([tx.txid for tx in txs])
