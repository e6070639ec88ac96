"""The node's side of the p2p seam: :class:`NodeBackend` implements ``p2p.backend.ChainBackend`` over the
:class:`~node.chain_service.ChainService`, and :func:`start_p2p` wires the service into a running node.

Cheap lookups (tip, locators, headers, which blocks to fetch, mempool membership) answer directly
from LevelDB point reads and in-memory indexes; everything that validates (headers, blocks,
transactions) goes through the ChainService's writer thread and process pool, off the event loop.
Objects that arrive from p2p are relayed by the p2p service itself; objects the node accepts from
elsewhere (its API, its miner) are announced through :attr:`ChainService.announcer`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chain.chaindb import BlockStatus as StoredStatus
from chain.errors import Reason, ValidationError
from chain.types import Block, Header, Seal, SealedHeader, SignedTx
from consensus.validation import FutureBlock
from node import metrics
from node.chain_service import BlockStatusText, ChainService
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
from p2p.sync import locator_heights

INVALID_TX_REASONS = frozenset({
    Reason.BAD_SIGNATURE, Reason.HIGH_S, Reason.BAD_PUBLIC_KEY, Reason.WRONG_CHAIN_ID, Reason.MALFORMED,
    Reason.TRAILING_BYTES, Reason.NON_CANONICAL, Reason.WRONG_TYPE, Reason.WRONG_FIELD_COUNT,
    Reason.OUT_OF_RANGE, Reason.TOO_LONG,
})


class NodeBackend:
    """ChainBackend over a ChainService (see p2p/backend.py for each method's contract)."""

    def __init__(self, chain: ChainService) -> None:
        self.chain = chain
        self._path_key: bytes | None = None
        self._path: list[tuple[int, bytes]] = []

    @property
    def chain_id(self) -> int:
        return self.chain.preset.chain_id

    @property
    def genesis_hash(self) -> bytes:
        return self.chain.genesis.hash

    def tip(self) -> ChainTip:
        head = self.chain.head
        return ChainTip(height=head.height, hash=head.hash, work=head.work)

    def block_locator(self) -> list[bytes]:
        best = self.chain.best_header
        db = self.chain.db
        cursor_hash, cursor = best.hash, best.sealed.header
        hashes: list[bytes] = []
        for height in locator_heights(cursor.height):
            while cursor.height > height:
                if db.is_canonical(cursor_hash):
                    jump = db.canonical_hash(height)
                    header = db.get_header(jump) if jump is not None else None
                    if jump is not None and header is not None:
                        cursor_hash, cursor = jump, header
                        break
                parent = self.chain.get_header(cursor.prev_hash)
                if parent is None:
                    return hashes if self.genesis_hash in hashes else [*hashes, self.genesis_hash]
                cursor_hash, cursor = cursor.prev_hash, parent
            hashes.append(cursor_hash)
        return hashes

    def headers_after(self, locator: Sequence[bytes], stop: bytes, limit: int) -> list[tuple[Header, Seal]]:
        db = self.chain.db
        start = 0
        for block_hash in locator:
            if db.is_canonical(block_hash):
                index = db.get_index(block_hash)
                if index is not None:
                    start = index.height
                    break
        out: list[tuple[Header, Seal]] = []
        height = start + 1
        while len(out) < limit:
            found = db.canonical_hash(height)
            sealed = db.get_sealed_header(found) if found is not None else None
            if found is None or sealed is None:
                break
            out.append((sealed.header, sealed.seal))
            if found == stop:
                break
            height += 1
        return out

    def _stored(self, block_hash: bytes) -> bool:
        index = self.chain.db.get_index(block_hash)
        return index is not None and index.status != StoredStatus.INVALID

    def blocks_to_fetch(self, limit: int) -> list[tuple[int, bytes]]:
        best = self.chain.best_header
        if self._path_key != best.hash:
            path: list[tuple[int, bytes]] = []
            cursor_hash, cursor = best.hash, best.sealed.header
            while not self._stored(cursor_hash):
                path.append((cursor.height, cursor_hash))
                parent = self.chain.get_header(cursor.prev_hash)
                if parent is None:
                    break
                cursor_hash, cursor = cursor.prev_hash, parent
            path.reverse()
            self._path, self._path_key = path, best.hash
        while self._path and self._stored(self._path[0][1]):
            self._path.pop(0)
        return [entry for entry in self._path if not self._stored(entry[1])][:limit]

    def has_block(self, block_hash: bytes) -> bool:
        return self._stored(block_hash)

    def get_block(self, block_hash: bytes) -> Block | None:
        return self.chain.db.get_block(block_hash)

    async def accept_headers(self, headers: Sequence[tuple[Header, Seal]]) -> HeadersOutcome:
        def accept() -> HeadersOutcome:
            new = 0
            for position, (header, seal) in enumerate(headers):
                try:
                    new += self.chain.accept_header(SealedHeader(header, seal))
                except FutureBlock:
                    return HeadersOutcome(HeadersStatus.OK, new)  # held back, not punished
                except ValidationError as exc:
                    if exc.reason is Reason.UNKNOWN_PARENT and position == 0:
                        return HeadersOutcome(HeadersStatus.UNCONNECTED, new, exc.reason)
                    return HeadersOutcome(HeadersStatus.INVALID, new, exc.reason)
            return HeadersOutcome(HeadersStatus.OK, new)

        return await self.chain.read(accept)

    async def submit_block(self, block: Block, peer: str) -> BlockOutcome:
        began = time.perf_counter()
        outcome = await self.chain.submit_block(block, local=False)
        metrics.block_outcome(outcome.status.value, outcome.reason, "p2p", time.perf_counter() - began)
        status = {
            BlockStatusText.ACCEPTED: BlockStatus.ACCEPTED, BlockStatusText.KNOWN: BlockStatus.ALREADY_KNOWN,
            BlockStatusText.ORPHAN: BlockStatus.ORPHAN, BlockStatusText.HELD: BlockStatus.HELD,
        }.get(outcome.status, BlockStatus.INVALID)
        known = {reason.value for reason in Reason}
        reason = Reason(outcome.reason) if outcome.reason is not None and outcome.reason in known else None
        return BlockOutcome(status, reason, outcome.detail)

    def has_tx(self, txid: bytes) -> bool:
        return txid in self.chain.mempool or self.chain.db.tx_location(txid) is not None

    def get_tx(self, txid: bytes) -> SignedTx | None:
        return self.chain.mempool.get(txid)

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
        try:
            return list(self.chain.mempool.txids())[:limit]
        except RuntimeError:  # the writer thread changed the pool mid-iteration; the caller retries later
            return []


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
