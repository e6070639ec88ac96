"""The node's side of the p2p seam: :class:`NodeBackend` implements ``p2p.backend.ChainBackend`` over the
:class:`~node.chain_service.ChainService`, and :func:`start_p2p` wires the service into a running node.

Cheap lookups (tip, locators, headers, which blocks to fetch, mempool membership) answer from the
service's published :class:`~node.core.types.ChainView` — a LevelDB snapshot and immutable copies
made by the writer thread — so the event loop never touches the live store or mempool; everything
that validates (headers, blocks, transactions) goes through the ChainService's writer thread and
process pool, off the event loop.
Objects that arrive from p2p are relayed by the p2p service itself; objects the node accepts from
elsewhere (its API, its miner) are announced through :attr:`ChainService.announcer`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chain.errors import Reason, StoreError, ValidationError
from chain.types import Block, Header, Seal, SealedHeader, SignedTx
from node import metrics
from node.chain_service import BlockStatusText, ChainService, ChainView
from p2p.backend import (
    BlockOutcome,
    BlockStatus,
    ChainTip,
    HeadersOutcome,
    HeadersStatus,
    TxOutcome,
    TxStatus,
)
from p2p.service import P2PService
from store.chaindb import BlockStatus as StoredStatus

log = logging.getLogger("pouw.node.p2p")

INVALID_TX_REASONS = frozenset({
    Reason.BAD_SIGNATURE, Reason.HIGH_S, Reason.BAD_PUBLIC_KEY, Reason.WRONG_CHAIN_ID, Reason.MALFORMED,
    Reason.TRAILING_BYTES, Reason.NON_CANONICAL, Reason.WRONG_TYPE, Reason.WRONG_FIELD_COUNT,
    Reason.OUT_OF_RANGE, Reason.TOO_LONG,
})

BUSY_BLOCKS = 2
"""Blocks being submitted at once from which we count as busy: one is working, more are waiting."""


class NodeBackend:
    """ChainBackend over a ChainService (see p2p/backend.py for each method's contract).

    The synchronous lookups run on the event loop, so they read only the service's published
    :class:`~node.core.types.ChainView` (a store snapshot and immutable copies), never the live
    store or mempool that the writer thread owns; everything that changes the chain goes through
    the service's coroutines."""

    def __init__(self, chain: ChainService) -> None:
        self.chain = chain
        self._blocks_in_progress = 0

    def is_busy(self) -> bool:
        """Our block pipeline is the slow side (p2p pauses its stall timers): blocks from peers are
        queued behind one another on the writer thread, or import is paused (full disk)."""
        return self._blocks_in_progress >= BUSY_BLOCKS or self.chain.import_paused is not None

    @property
    def chain_id(self) -> int:
        return self.chain.preset.chain_id

    @property
    def genesis_hash(self) -> bytes:
        return self.chain.genesis.hash

    def tip(self) -> ChainTip:
        head = self.chain.view.head
        return ChainTip(height=head.height, hash=head.hash, work=head.work)

    def block_locator(self) -> list[bytes]:
        return list(self.chain.view.locator)

    def headers_after(self, locator: Sequence[bytes], stop: bytes, limit: int) -> list[tuple[Header, Seal]]:
        try:
            return self._headers_after(locator, stop, limit)
        except StoreError as exc:  # the view's snapshot went stale (store reopened) or the store failed
            log.warning("headers for a peer not read: %s", exc)
            return []

    def _headers_after(self, locator: Sequence[bytes], stop: bytes, limit: int) -> list[tuple[Header, Seal]]:
        reader = self.chain.view.reader
        start = 0
        for block_hash in locator:
            if reader.is_canonical(block_hash):
                index = reader.get_index(block_hash)
                if index is not None:
                    start = index.height
                    break
        out: list[tuple[Header, Seal]] = []
        height = start + 1
        while len(out) < limit:
            found = reader.canonical_hash(height)
            sealed = reader.get_sealed_header(found) if found is not None else None
            if found is None or sealed is None:
                break
            out.append((sealed.header, sealed.seal))
            if found == stop:
                break
            height += 1
        return out

    @staticmethod
    def _stored(view: ChainView, block_hash: bytes) -> bool:
        try:
            index = view.reader.get_index(block_hash)
        except StoreError as exc:
            log.warning("block index not read: %s", exc)
            return False
        return index is not None and index.status != StoredStatus.INVALID

    def blocks_to_fetch(self, limit: int) -> list[tuple[int, bytes]]:
        view = self.chain.view
        out: list[tuple[int, bytes]] = []
        for entry in view.fetch_path:
            if len(out) >= limit:
                break
            if not self._stored(view, entry[1]):
                out.append(entry)
        return out

    def has_block(self, block_hash: bytes) -> bool:
        return self._stored(self.chain.view, block_hash)

    def get_block(self, block_hash: bytes) -> Block | None:
        try:
            return self.chain.view.reader.get_block(block_hash)
        except StoreError as exc:
            log.warning("block for a peer not read: %s", exc)
            return None

    async def accept_headers(self, headers: Sequence[tuple[Header, Seal]]) -> HeadersOutcome:
        new, error, position = await self.chain.accept_headers([SealedHeader(h, s) for h, s in headers])
        if error is None:
            return HeadersOutcome(HeadersStatus.OK, new)
        if error.reason is Reason.UNKNOWN_PARENT and position == 0:
            return HeadersOutcome(HeadersStatus.UNCONNECTED, new, error.reason)
        return HeadersOutcome(HeadersStatus.INVALID, new, error.reason)

    async def submit_block(self, block: Block, peer: str) -> BlockOutcome:
        self._blocks_in_progress += 1
        began = time.perf_counter()
        try:
            outcome = await self.chain.submit_block(block, local=False)
        finally:
            self._blocks_in_progress -= 1
        metrics.block_outcome(outcome.status.value, outcome.reason, "p2p", time.perf_counter() - began)
        status = {
            BlockStatusText.ACCEPTED: BlockStatus.ACCEPTED, BlockStatusText.KNOWN: BlockStatus.ALREADY_KNOWN,
            BlockStatusText.ORPHAN: BlockStatus.ORPHAN, BlockStatusText.HELD: BlockStatus.HELD,
        }.get(outcome.status, BlockStatus.INVALID)
        known = {reason.value for reason in Reason}
        reason = Reason(outcome.reason) if outcome.reason is not None and outcome.reason in known else None
        return BlockOutcome(status, reason, outcome.detail)

    def has_tx(self, txid: bytes) -> bool:
        view = self.chain.view
        try:
            return txid in view.mempool or view.reader.tx_location(txid) is not None
        except StoreError as exc:
            log.warning("tx index not read: %s", exc)
            return False

    def get_tx(self, txid: bytes) -> SignedTx | None:
        return self.chain.view.mempool.get(txid)

    async def submit_tx(self, tx: SignedTx, peer: str) -> TxOutcome:
        try:
            await self.chain.submit_tx(tx, local=False)
        except ValidationError as exc:
            if exc.reason is Reason.ALREADY_KNOWN:
                return TxOutcome(TxStatus.ALREADY_KNOWN, exc.reason, exc.detail)
            status = TxStatus.INVALID if exc.reason in INVALID_TX_REASONS else TxStatus.REJECTED
            return TxOutcome(status, exc.reason, exc.detail)
        return TxOutcome(TxStatus.ACCEPTED)

    def mempool_txids(self, limit: int) -> list[bytes]:
        return list(itertools.islice(self.chain.view.mempool, limit))


def peer_views(service: P2PService) -> list[dict[str, Any]]:
    return [dataclasses.asdict(info) for info in service.peers()]


async def start_p2p(
    chain: ChainService, datadir: Path, *, host: str, port: int, connect: Sequence[tuple[str, int]], listen: bool
) -> P2PService:
    """Start the p2p service over ``chain`` and make it the chain's announcer."""
    service = P2PService(
        NodeBackend(chain), datadir, listen_host=host, listen_port=port, connect=list(connect), listen=listen,
    )
    await service.start()
    chain.announcer = service
    return service
