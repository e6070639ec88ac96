"""The seam between the p2p layer and the node: what p2p asks of the chain, and what the node tells p2p.

The node implements :class:`ChainBackend` over its store, mempool and validation pipeline; the
p2p service never touches those directly. The async methods are where heavy checks happen (the node
runs them off the event loop); the plain methods must be cheap lookups.

The other direction is :class:`Announcer`: after the node accepts a block or transaction from
somewhere other than the p2p layer (its RPC, its miner), it calls ``announce_block``/``announce_tx``
so the service relays it. Objects that came *from* p2p are relayed by the service itself.

:class:`p2p.testing.MemoryBackend` is a small in-memory implementation for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from chain.errors import Reason
from chain.types import Block, Header, Seal, SignedTx


@dataclass(frozen=True)
class ChainTip:
    """The best fully validated block: its height, hash and the chain's cumulative work."""

    height: int
    hash: bytes
    work: int


class HeadersStatus(Enum):
    OK = "ok"
    """Every header passed the cheap checks (some may have been known already)."""
    UNCONNECTED = "unconnected"
    """The first header's parent is unknown; nothing was stored."""
    INVALID = "invalid"
    """A header failed a check; those before it were stored, none after it."""


@dataclass(frozen=True)
class HeadersOutcome:
    status: HeadersStatus
    new: int = 0
    """Headers that were not known before this call."""
    reason: Reason | None = None


class BlockStatus(Enum):
    ACCEPTED = "accepted"
    """Fully validated and stored (on the best chain or a side branch)."""
    ALREADY_KNOWN = "already-known"
    ORPHAN = "orphan"
    """Its parent is not a validated block yet; the p2p layer holds it and fetches the parent."""
    INVALID = "invalid"
    """It breaks a consensus rule (``reason`` says which): the sender is punished."""
    HELD = "held"
    """Valid so far but its timestamp is in the future; the node retries it and announces it later."""


@dataclass(frozen=True)
class BlockOutcome:
    status: BlockStatus
    reason: Reason | None = None
    detail: str = ""


class TxStatus(Enum):
    ACCEPTED = "accepted"
    ALREADY_KNOWN = "already-known"
    REJECTED = "rejected"
    """Not for this mempool now (fee, nonce gap, full pool): harmless, not relayed."""
    INVALID = "invalid"
    """Can never be valid (bad signature, wrong chain, malformed): the sender is punished."""


@dataclass(frozen=True)
class TxOutcome:
    status: TxStatus
    reason: Reason | None = None
    detail: str = ""


class ChainBackend(Protocol):
    """What the p2p layer needs from the node. Hashes are 32-byte block hashes / txids."""

    @property
    def chain_id(self) -> int: ...

    @property
    def genesis_hash(self) -> bytes: ...

    def tip(self) -> ChainTip:
        """The best fully validated block (what Version advertises)."""
        ...

    def block_locator(self) -> list[bytes]:
        """Hashes of the best *header* chain: the tip, 9 more one by one, then doubling steps back,
        ending with the genesis hash (at most 64). See :func:`p2p.sync.locator_heights`."""
        ...

    def headers_after(
        self, locator: Sequence[bytes], stop: bytes, limit: int
    ) -> list[tuple[Header, Seal]]:
        """Up to ``limit`` headers of the best *validated* chain after the first locator hash on it
        (after genesis if none is), ending early at ``stop`` (inclusive)."""
        ...

    def blocks_to_fetch(self, limit: int) -> list[tuple[int, bytes]]:
        """(height, hash) of the blocks the node lacks on its best header chain, lowest first: the
        descendants of the last validated block on that chain, at most ``limit`` of them. Called
        after every accepted block (with ``limit=1``) and on every scheduler pass: keep it cheap."""
        ...

    def has_block(self, block_hash: bytes) -> bool:
        """True once the block is validated and stored (so its children can be submitted)."""
        ...

    def get_block(self, block_hash: bytes) -> Block | None: ...

    async def accept_headers(self, headers: Sequence[tuple[Header, Seal]]) -> HeadersOutcome:
        """Cheap checks (parent known, height, timestamp, target, the seal's winning tile), then
        store. ``headers`` are consecutive: each is the child of the one before."""
        ...

    async def submit_block(self, block: Block, peer: str) -> BlockOutcome:
        """Fully validate and store ``block`` received from ``peer`` (an address, for logs)."""
        ...

    def has_tx(self, txid: bytes) -> bool:
        """In the mempool (or recently confirmed: no need to fetch it)."""
        ...

    def get_tx(self, txid: bytes) -> SignedTx | None: ...

    async def submit_tx(self, tx: SignedTx, peer: str) -> TxOutcome: ...

    def mempool_txids(self, limit: int) -> list[bytes]:
        """At most ``limit`` mempool txids, the ones a new peer should hear of first."""
        ...

    # Optional (see :func:`backend_busy`): ``def is_busy(self) -> bool`` — the block pipeline is
    # saturated; cheap, called by the download scheduler once per tick.


def backend_busy(backend: ChainBackend) -> bool:
    """The backend's optional ``is_busy()``: True while its block pipeline is saturated (a queue of
    blocks waiting for validation, the chain thread behind). The p2p layer pauses its stall timers
    then: a peer is never dropped for stalling while we are the slow side. Backends without the
    method are never busy."""
    probe = getattr(backend, "is_busy", None)
    return bool(probe()) if callable(probe) else False


class Announcer(Protocol):
    """What the node calls on the p2p service after accepting an object from outside p2p."""

    def announce_block(self, block: Block) -> None: ...

    def announce_tx(self, tx: SignedTx) -> None: ...
