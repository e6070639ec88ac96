"""The values the node core hands out: block outcomes, header entries, mining templates, and the
immutable :class:`ChainView` that readers outside the writer thread use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from chain.state import JobRecord
from chain.types import Block, Header, SealedHeader, SignedTx
from store.chaindb import ChainHead, ChainReader


class Announcer(Protocol):
    """Relays what the node accepted from outside p2p (the p2p service implements it)."""

    def announce_block(self, block: Block) -> None: ...

    def announce_tx(self, tx: SignedTx) -> None: ...


class BlockStatusText(StrEnum):
    ACCEPTED = "accepted"
    """Stored; ``became_tip`` says whether it is the new head."""
    KNOWN = "known"
    ORPHAN = "orphan"
    """Parent unknown: the caller should fetch the parent."""
    INVALID = "invalid"
    HELD = "held"
    """Timestamp too far in the future: kept and retried, not punished."""
    STALE = "stale"
    """A mining result for a template whose parent is no longer the head."""


@dataclass(frozen=True)
class BlockOutcome:
    status: BlockStatusText
    block_hash: bytes
    height: int
    reason: str | None = None
    detail: str = ""
    became_tip: bool = False

    @property
    def ok(self) -> bool:
        return self.status in (BlockStatusText.ACCEPTED, BlockStatusText.KNOWN)


@dataclass(frozen=True)
class HeaderEntry:
    """A header known to the node, with its hash and the cumulative work of its chain."""

    sealed: SealedHeader
    hash: bytes
    work: int
    size: int = field(default=0, compare=False)
    """Encoded size (header + seal), counted against the header tree's byte bound."""


@dataclass(frozen=True)
class Template:
    """A block template handed to a miner: the header is final; the seal is what mining decides."""

    header: Header
    txs: tuple[SignedTx, ...]
    job: JobRecord
    parent_hash: bytes
    created: float = field(compare=False)

    @property
    def template_id(self) -> bytes:
        return self.header.mining_hash


@dataclass(frozen=True)
class ChainView:
    """The chain as it was after the writer thread's last change, safe to read from any thread:
    ``reader`` reads a store snapshot, everything else is an immutable copy."""

    head: ChainHead
    best_header: HeaderEntry
    reader: ChainReader
    mempool: Mapping[bytes, SignedTx]
    """Pending transactions by txid, in the mempool's order."""
    locator: tuple[bytes, ...]
    """Block locator of the best header's chain (headers-first sync)."""
    fetch_path: tuple[tuple[int, bytes], ...]
    """(height, hash) of the best header's ancestors whose blocks were not stored, lowest first."""
