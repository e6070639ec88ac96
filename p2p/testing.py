"""An in-memory :class:`~p2p.backend.ChainBackend` for tests: a header tree, full blocks, a mempool.

Deliberately simple, and not the node: every validated block keeps its whole post-state, the
header checks are the cheap ones (parent, height, median-time-past, unchanged target, version) plus
a pluggable seal check, full validation is :func:`chain.transition.apply_block`, and fork choice is
the most cumulative work (``consensus.difficulty.block_work``), ties to the first seen. The async
methods yield to the loop once before acting, like a node that validates off the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from chain.errors import InvalidBlock, InvalidTransaction, Reason
from chain.genesis import BLOCK_VERSION
from chain.rules import ChainRules
from chain.state import State
from chain.transition import Overlay, apply_block, apply_tx
from chain.types import Block, Header, Seal, SignedTx, block_hash_of
from consensus.difficulty import MAX_FUTURE_SECONDS, MEDIAN_TIME_SPAN, block_work, median_time_past
from p2p.backend import (
    BlockOutcome,
    BlockStatus,
    ChainTip,
    HeadersOutcome,
    HeadersStatus,
    TxOutcome,
    TxStatus,
)
from p2p.sync import locator_heights

INVALID_PROOF = b"bad"
"""Seal proof bytes that :func:`reject_marked_proof` (the default seal check) refuses."""

PERMANENTLY_INVALID = frozenset({
    Reason.BAD_SIGNATURE, Reason.HIGH_S, Reason.BAD_PUBLIC_KEY, Reason.WRONG_CHAIN_ID,
    Reason.ZERO_AMOUNT, Reason.BAD_JOB_SPEC,
})
"""Transaction rejections no later state can cure; the others (nonce, balance...) are harmless."""


def reject_marked_proof(header: Header, seal: Seal) -> bool:
    return seal.proof != INVALID_PROOF


@dataclass(frozen=True, slots=True)
class _Entry:
    header: Header
    seal: Seal
    hash: bytes
    work: int

    @property
    def height(self) -> int:
        return self.header.height


class MemoryBackend:
    """A ChainBackend over :class:`chain.state.State`, for tests only."""

    def __init__(
        self, genesis: Block, genesis_state: State, rules: ChainRules, *,
        seal_check: Callable[[Header, Seal], bool] = reject_marked_proof,
        clock: Callable[[], int] | None = None, max_mempool: int = 10_000,
    ) -> None:
        self.rules = rules
        self._seal_check = seal_check
        self._clock = clock
        self._max_mempool = max_mempool
        root = _Entry(genesis.header, genesis.seal, genesis.hash, block_work(genesis.header.target))
        self._genesis = root.hash
        self._headers: dict[bytes, _Entry] = {root.hash: root}
        self._children: dict[bytes, list[bytes]] = {}
        self._blocks: dict[bytes, Block] = {root.hash: genesis}
        self._states: dict[bytes, State] = {root.hash: genesis_state}
        self._invalid: set[bytes] = set()
        self._best_header = root.hash
        self._active: list[bytes] = [root.hash]
        self.mempool: dict[bytes, SignedTx] = {}

    # -- chain queries ---------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self.rules.chain_id

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis

    def tip(self) -> ChainTip:
        entry = self._headers[self._active[-1]]
        return ChainTip(height=entry.height, hash=entry.hash, work=entry.work)

    def tip_state(self) -> State:
        return self._states[self._active[-1]]

    def active_chain(self) -> list[bytes]:
        """Hashes of the best validated chain, genesis first."""
        return list(self._active)

    def block_locator(self) -> list[bytes]:
        wanted = set(locator_heights(self._headers[self._best_header].height))
        locator = []
        for entry in self._ancestors(self._best_header):
            if entry.height in wanted:
                locator.append(entry.hash)
        return locator

    def headers_after(
        self, locator: Sequence[bytes], stop: bytes, limit: int
    ) -> list[tuple[Header, Seal]]:
        start = 0
        for block_hash in locator:
            entry = self._headers.get(block_hash)
            if entry is not None and self._on_active(entry):
                start = entry.height
                break
        headers = []
        for block_hash in self._active[start + 1 : start + 1 + limit]:
            entry = self._headers[block_hash]
            headers.append((entry.header, entry.seal))
            if block_hash == stop:
                break
        return headers

    def blocks_to_fetch(self, limit: int) -> list[tuple[int, bytes]]:
        missing = []
        for entry in self._ancestors(self._best_header):
            if entry.hash in self._states:
                break
            missing.append((entry.height, entry.hash))
        missing.reverse()
        return missing[:limit]

    def has_block(self, block_hash: bytes) -> bool:
        return block_hash in self._states

    def get_block(self, block_hash: bytes) -> Block | None:
        return self._blocks.get(block_hash)

    # -- headers and blocks ----------------------------------------------------------------------

    async def accept_headers(self, headers: Sequence[tuple[Header, Seal]]) -> HeadersOutcome:
        await asyncio.sleep(0)
        return self.add_headers(headers)

    def add_headers(self, headers: Sequence[tuple[Header, Seal]]) -> HeadersOutcome:
        new = 0
        for index, (header, seal) in enumerate(headers):
            block_hash = block_hash_of(header, seal)
            if block_hash in self._invalid or header.prev_hash in self._invalid:
                return HeadersOutcome(HeadersStatus.INVALID, new, Reason.KNOWN_INVALID)
            if block_hash in self._headers:
                continue
            parent = self._headers.get(header.prev_hash)
            if parent is None:
                if index == 0:
                    return HeadersOutcome(HeadersStatus.UNCONNECTED)
                return HeadersOutcome(HeadersStatus.INVALID, new, Reason.UNKNOWN_PARENT)
            try:
                self._check_header(parent, header, seal)
            except InvalidBlock as exc:
                return HeadersOutcome(HeadersStatus.INVALID, new, exc.reason)
            entry = _Entry(header, seal, block_hash, parent.work + block_work(header.target))
            self._headers[block_hash] = entry
            self._children.setdefault(parent.hash, []).append(block_hash)
            if entry.work > self._headers[self._best_header].work:
                self._best_header = block_hash
            new += 1
        return HeadersOutcome(HeadersStatus.OK, new)

    def _check_header(self, parent: _Entry, header: Header, seal: Seal) -> None:
        if header.version != BLOCK_VERSION:
            raise InvalidBlock(Reason.BAD_VERSION, str(header.version))
        if header.height != parent.height + 1:
            raise InvalidBlock(Reason.BAD_HEIGHT, f"{header.height} after {parent.height}")
        recent = [e.header.timestamp for e in islice(self._ancestors(parent.hash), MEDIAN_TIME_SPAN)]
        if header.timestamp <= median_time_past(recent):
            raise InvalidBlock(Reason.BAD_TIMESTAMP, "not after the median time past")
        if header.target != parent.header.target:
            raise InvalidBlock(Reason.BAD_TARGET, "target changed")
        if not self._seal_check(header, seal):
            raise InvalidBlock(Reason.BAD_SEAL, "seal check failed")

    async def submit_block(self, block: Block, peer: str) -> BlockOutcome:
        await asyncio.sleep(0)
        return self.add_block(block)

    def add_block(self, block: Block) -> BlockOutcome:
        block_hash = block.hash
        if block_hash in self._invalid:
            return BlockOutcome(BlockStatus.INVALID, Reason.KNOWN_INVALID)
        if block_hash in self._states:
            return BlockOutcome(BlockStatus.ALREADY_KNOWN)
        headers = self.add_headers([(block.header, block.seal)])
        if headers.status is HeadersStatus.UNCONNECTED:
            return BlockOutcome(BlockStatus.ORPHAN)
        if headers.status is HeadersStatus.INVALID:
            return BlockOutcome(BlockStatus.INVALID, headers.reason)
        parent_state = self._states.get(block.header.prev_hash)
        if parent_state is None:
            return BlockOutcome(BlockStatus.ORPHAN)
        if self._clock is not None and block.header.timestamp > self._clock() + MAX_FUTURE_SECONDS:
            return BlockOutcome(BlockStatus.HELD, Reason.FUTURE_TIMESTAMP)
        try:
            diff = apply_block(parent_state, block, self.rules)
        except InvalidBlock as exc:
            self._mark_invalid(block_hash)
            return BlockOutcome(BlockStatus.INVALID, exc.reason, exc.detail)
        self._states[block_hash] = parent_state.apply(diff)
        self._blocks[block_hash] = block
        if self._headers[block_hash].work > self.tip().work:
            self._set_tip(block_hash)
        return BlockOutcome(BlockStatus.ACCEPTED)

    def import_blocks(self, blocks: Iterable[Block]) -> None:
        """Add blocks built by the test itself; each must be accepted."""
        for block in blocks:
            outcome = self.add_block(block)
            if outcome.status is not BlockStatus.ACCEPTED:
                raise InvalidBlock(outcome.reason or Reason.MALFORMED, f"import: {outcome}")

    def _ancestors(self, block_hash: bytes) -> Iterable[_Entry]:
        """The entry of ``block_hash`` and then each parent, down to genesis."""
        entry: _Entry | None = self._headers[block_hash]
        while entry is not None:
            yield entry
            entry = self._headers.get(entry.header.prev_hash) if entry.height > 0 else None

    def _on_active(self, entry: _Entry) -> bool:
        return entry.height < len(self._active) and self._active[entry.height] == entry.hash

    def _set_tip(self, block_hash: bytes) -> None:
        branch = []
        for entry in self._ancestors(block_hash):
            if self._on_active(entry):
                break
            branch.append(entry.hash)
        fork_height = self._headers[block_hash].height - len(branch)
        del self._active[fork_height + 1 :]
        self._active.extend(reversed(branch))
        for connected in reversed(branch):
            for tx in self._blocks[connected].txs:
                self.mempool.pop(tx.txid, None)
        self._revalidate_mempool()

    def _mark_invalid(self, block_hash: bytes) -> None:
        stack = [block_hash]
        while stack:
            current = stack.pop()
            self._invalid.add(current)
            stack.extend(self._children.get(current, ()))
        if self._best_header in self._invalid:
            candidates = (e for h, e in self._headers.items() if h not in self._invalid)
            self._best_header = max(candidates, key=lambda e: e.work).hash

    # -- mempool ---------------------------------------------------------------------------------

    def has_tx(self, txid: bytes) -> bool:
        return txid in self.mempool

    def get_tx(self, txid: bytes) -> SignedTx | None:
        return self.mempool.get(txid)

    def mempool_txids(self, limit: int) -> list[bytes]:
        return list(islice(self.mempool, limit))

    async def submit_tx(self, tx: SignedTx, peer: str) -> TxOutcome:
        await asyncio.sleep(0)
        return self.add_tx(tx)

    def add_tx(self, tx: SignedTx) -> TxOutcome:
        txid = tx.txid
        if txid in self.mempool:
            return TxOutcome(TxStatus.ALREADY_KNOWN)
        if len(self.mempool) >= self._max_mempool:
            return TxOutcome(TxStatus.REJECTED, Reason.FEE_TOO_LOW, "mempool full")
        pending = self._pending_state()
        try:
            apply_tx(pending, tx, self._headers[self._active[-1]].header, self.rules)
        except InvalidTransaction as exc:
            status = TxStatus.INVALID if exc.reason in PERMANENTLY_INVALID else TxStatus.REJECTED
            return TxOutcome(status, exc.reason, exc.detail)
        self.mempool[txid] = tx
        return TxOutcome(TxStatus.ACCEPTED)

    def _pending_state(self) -> Overlay:
        """The tip state with the mempool applied in arrival order."""
        overlay = Overlay(self.tip_state())
        header = self._headers[self._active[-1]].header
        for tx in self.mempool.values():
            apply_tx(overlay, tx, header, self.rules)
        return overlay

    def _revalidate_mempool(self) -> None:
        overlay = Overlay(self.tip_state())
        header = self._headers[self._active[-1]].header
        for txid, tx in list(self.mempool.items()):
            try:
                apply_tx(overlay, tx, header, self.rules)
            except InvalidTransaction:
                del self.mempool[txid]
