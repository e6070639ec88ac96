"""The header tree: headers accepted ahead of their blocks (headers-first sync), the best header,
and the ancestry a header's checks need (median time past, the ASERT anchor).

Headers come from two places: the block store (blocks we have) and :attr:`HeaderTree.entries`
(headers whose blocks we do not have yet). A header is forgotten from ``entries`` once its block
is stored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from chain.errors import InvalidBlock, PouwError, Reason, ValidationError
from chain.state import JobRecord, get_job
from chain.types import Block, Header, SealedHeader, block_hash_of
from consensus.difficulty import block_work, median_time_past
from consensus.pouw_seal import PouwSealVerifier
from consensus.presets import Preset
from consensus.seal import NoProofSealVerifier
from consensus.validation import FutureBlock, HeaderContext, check_header, expected_target
from node.core.types import HeaderEntry
from node.core.verdicts import Verdicts
from p2p.sync import locator_heights
from store.chaindb import BlockStatus, ChainDB

MAX_ANCHOR_CACHE = 4_096
MAX_HEADER_TREE = 50_000
"""Headers kept ahead of their blocks, at most (by count)..."""
MAX_HEADER_TREE_BYTES = 64 << 20
"""...and by encoded size (a sealed header carries its tile proof)."""


class HeaderDeferred(PouwError):
    """The header is not kept for now, and the sender is not punished: its winning tile cannot be
    checked yet (its job is unknown at the head, so it shows no work and is not credited; it may
    come again once the blocks before it create the job), or the tree is full."""


class HeaderTree:
    """Headers known to the node and the best of them. Attach a ChainDB before use."""

    def __init__(self, preset: Preset, genesis: Block, verdicts: Verdicts,
                 clock: Callable[[], float] = time.time) -> None:
        self.preset = preset
        self.genesis = genesis
        self.verdicts = verdicts
        self.clock = clock
        self.entries: OrderedDict[bytes, HeaderEntry] = OrderedDict()
        self.bytes = 0
        """Encoded size of the headers in ``entries``."""
        self.best = HeaderEntry(SealedHeader(genesis.header, genesis.seal), genesis.hash, 0)
        self._anchors: OrderedDict[bytes, bytes] = OrderedDict()
        self._db: ChainDB | None = None
        self._verifier: PouwSealVerifier | NoProofSealVerifier = NoProofSealVerifier()
        self._path_key: bytes | None = None
        self._path: list[tuple[int, bytes]] = []

    def attach(self, db: ChainDB, verifier: PouwSealVerifier | NoProofSealVerifier) -> None:
        self._db = db
        self._verifier = verifier
        self.prune()

    @property
    def db(self) -> ChainDB:
        if self._db is None:
            raise InvalidBlock(Reason.MALFORMED, "header tree has no chain database")
        return self._db

    # -- lookups ----------------------------------------------------------------------------------

    def get_header(self, block_hash: bytes) -> Header | None:
        """A header from the block store or from headers accepted ahead of their blocks."""
        entry = self.entries.get(block_hash)
        return entry.sealed.header if entry is not None else self.db.get_header(block_hash)

    def header_work(self, block_hash: bytes) -> int | None:
        entry = self.entries.get(block_hash)
        if entry is not None:
            return entry.work
        index = self.db.get_index(block_hash)
        return index.work if index is not None else None

    # -- header context ---------------------------------------------------------------------------

    def _ancestor_timestamps(self, parent_hash: bytes, count: int) -> list[int]:
        stamps: list[int] = []
        cursor: bytes | None = parent_hash
        while cursor is not None and len(stamps) < count:
            header = self.get_header(cursor)
            if header is None:
                break
            stamps.append(header.timestamp)
            cursor = header.prev_hash if header.height > 0 else None
        stamps.reverse()
        return stamps

    def _anchor(self, parent_hash: bytes, parent: Header) -> Header | None:
        """The height-1 block of the parent's branch (the ASERT anchor), memoised per block."""
        if parent.height == 0:
            return None
        if parent.height == 1:
            return parent
        chain: list[bytes] = []
        cursor = parent_hash
        anchor_hash: bytes | None = None
        while anchor_hash is None:
            cached = self._anchors.get(cursor)
            if cached is not None:
                anchor_hash = cached
                break
            header = self.get_header(cursor)
            if header is None:
                raise InvalidBlock(Reason.UNKNOWN_PARENT, "broken ancestry")
            if header.height == 1:
                anchor_hash = cursor
                break
            chain.append(cursor)
            cursor = header.prev_hash
        for h in chain:
            self._anchors[h] = anchor_hash
        while len(self._anchors) > MAX_ANCHOR_CACHE:
            self._anchors.popitem(last=False)
        return self.get_header(anchor_hash)

    def header_context(self, parent_hash: bytes) -> HeaderContext:
        parent = self.get_header(parent_hash)
        if parent is None:
            raise InvalidBlock(Reason.UNKNOWN_PARENT, parent_hash.hex())
        return HeaderContext(
            parent=parent, parent_hash=parent_hash,
            median_time_past=median_time_past(self._ancestor_timestamps(parent_hash, 11)),
            anchor=self._anchor(parent_hash, parent),
        )

    def next_target(self, parent_hash: bytes) -> int:
        return expected_target(self.preset, self.header_context(parent_hash), self.genesis.header.target)

    def check(self, header: Header) -> None:
        """Stage 3 of ``header`` against its parent (raises InvalidBlock or FutureBlock)."""
        check_header(self.preset, header, self.header_context(header.prev_hash), self.genesis.header.target,
                     int(self.clock()))

    # -- accepting headers ------------------------------------------------------------------------

    def tile_job(self, header: Header) -> JobRecord | None:
        """The job whose model shape the header's tile check needs, from the head state; None when
        it is unknown there (the tile cannot be checked) or the node runs without proofs."""
        if not isinstance(self._verifier, PouwSealVerifier):
            return None
        return get_job(self.db.state, header.job_id)

    def accept(self, sealed: SealedHeader, tile_checked: bool = False,
               tile_error: ValidationError | None = None) -> bool:
        """Cheap checks of a header whose block we do not have yet (parent known and not invalid,
        header rules), then its winning tile — or, when ``tile_checked``, ``tile_error``, the
        verdict of a check made elsewhere — then remember it. Returns False if already known.
        Raises HeaderDeferred (not the sender's fault) when the tile cannot be checked, or when the
        tree is full of better headers."""
        header = sealed.header
        block_hash = block_hash_of(header, sealed.seal)
        if block_hash in self.entries or self.db.get_index(block_hash) is not None:
            return False
        known = self.verdicts.reason(block_hash)
        if known is not None:
            raise InvalidBlock(Reason.KNOWN_INVALID, known)
        parent_work = self.header_work(header.prev_hash)
        if parent_work is None:
            raise InvalidBlock(Reason.UNKNOWN_PARENT, header.prev_hash.hex())
        if header.prev_hash in self.verdicts or self._stored_invalid(header.prev_hash):
            raise InvalidBlock(Reason.KNOWN_INVALID, "parent is invalid")
        try:
            self.check(header)
            if tile_error is not None:
                raise tile_error
            if isinstance(self._verifier, PouwSealVerifier) and not tile_checked:
                if self.tile_job(header) is None:
                    raise HeaderDeferred(f"job {header.job_id.hex()[:16]} unknown at the head")
                self._verifier.check_tile(header, sealed.seal, self.db.state)
        except FutureBlock:
            raise
        except ValidationError as exc:
            self.verdicts.remember_invalid(block_hash, f"{exc.reason.value}: {exc.detail}")
            raise
        entry = HeaderEntry(sealed, block_hash, parent_work + block_work(header.target),
                            size=len(header.encode()) + len(sealed.seal.encode()))
        self.entries[block_hash] = entry
        self.bytes += entry.size
        if entry.work > self.best.work:
            self.best = entry
        self._evict()
        if block_hash not in self.entries:
            raise HeaderDeferred("the header tree is full: this header waits for blocks to arrive")
        return True

    def _stored_invalid(self, block_hash: bytes) -> bool:
        index = self.db.get_index(block_hash)
        return index is not None and index.status == BlockStatus.INVALID

    def _forget(self, hashes: set[bytes]) -> None:
        """Forget ``hashes`` and every entry that descends from one of them."""
        gone = set(hashes)
        for block_hash, entry in list(self.entries.items()):  # parents come before their children
            if block_hash in gone or entry.sealed.header.prev_hash in gone:
                gone.add(block_hash)
                self.bytes -= entry.size
                del self.entries[block_hash]

    def _best_path(self) -> set[bytes]:
        path: set[bytes] = set()
        cursor = self.entries.get(self.best.hash)
        while cursor is not None:
            path.add(cursor.hash)
            cursor = self.entries.get(cursor.sealed.header.prev_hash)
        return path

    def _evict(self) -> None:
        """Keep the tree within its bounds: forget the least-work headers off the best chain (and
        what descends from them); the best chain itself is never evicted — a header that would
        push it over the bounds is not kept."""
        if len(self.entries) <= MAX_HEADER_TREE and self.bytes <= MAX_HEADER_TREE_BYTES:
            return
        keep = self._best_path()
        candidates = sorted((e for e in self.entries.values() if e.hash not in keep), key=lambda e: e.work)
        for victim in candidates:
            if len(self.entries) <= MAX_HEADER_TREE and self.bytes <= MAX_HEADER_TREE_BYTES:
                return
            if victim.hash in self.entries:
                self._forget({victim.hash})
        while len(self.entries) > MAX_HEADER_TREE or self.bytes > MAX_HEADER_TREE_BYTES:
            newest = next(reversed(self.entries))  # only the best chain is left: drop its newest
            self._forget({newest})
        if self.best.hash not in self.entries:
            self._choose_best()

    def _choose_best(self) -> None:
        head = self.db.head
        best = max(self.entries.values(), key=lambda e: e.work, default=None)
        if best is None or best.work <= head.work:
            sealed = self.db.get_sealed_header(head.hash)
            if sealed is not None:
                self.best = HeaderEntry(sealed, head.hash, head.work)
        else:
            self.best = best

    def invalidate(self, block_hash: bytes) -> None:
        """``block_hash`` failed validation: forget it and its descendants; if the best header was
        among them, fall back to the best header left (or the head)."""
        self._forget({block_hash})
        if self.best.hash not in self.entries and self.best.hash != self.db.head.hash:
            self._choose_best()

    def prune(self) -> None:
        """Forget headers whose blocks are now stored; keep the best header pointer honest."""
        for block_hash in [h for h in self.entries if self.db.get_index(h) is not None]:
            self.bytes -= self.entries.pop(block_hash).size
        if self.best.hash not in self.entries or self.best.work <= self.db.head.work:
            self._choose_best()

    def block_stored(self, block: Block) -> None:
        """A block arrived for a header: the block store holds its header from now on."""
        block_hash = block.hash
        stored = self.entries.pop(block_hash, None)
        if stored is not None:
            self.bytes -= stored.size
        head = self.db.head
        if self.best.hash == block_hash or head.work > self.best.work:
            self.best = HeaderEntry(SealedHeader(block.header, block.seal), block_hash,
                                    self.header_work(block_hash) or head.work)
            if head.work > self.best.work:
                self.prune()

    # -- what headers-first sync asks for ---------------------------------------------------------

    def locator(self) -> list[bytes]:
        """Block locator of the best header's chain: dense near the tip, then exponentially sparse."""
        db = self.db
        genesis_hash = self.genesis.hash
        cursor_hash, cursor = self.best.hash, self.best.sealed.header
        hashes: list[bytes] = []
        for height in locator_heights(cursor.height):
            while cursor.height > height:
                if db.is_canonical(cursor_hash):
                    jump = db.canonical_hash(height)
                    header = db.get_header(jump) if jump is not None else None
                    if jump is not None and header is not None:
                        cursor_hash, cursor = jump, header
                        break
                parent = self.get_header(cursor.prev_hash)
                if parent is None:
                    return hashes if genesis_hash in hashes else [*hashes, genesis_hash]
                cursor_hash, cursor = cursor.prev_hash, parent
            hashes.append(cursor_hash)
        return hashes

    def _stored(self, block_hash: bytes) -> bool:
        index = self.db.get_index(block_hash)
        return index is not None and index.status != BlockStatus.INVALID

    def fetch_path(self) -> list[tuple[int, bytes]]:
        """(height, hash) of the best header's ancestors whose blocks are not stored, lowest first."""
        best = self.best
        if self._path_key != best.hash:
            path: list[tuple[int, bytes]] = []
            cursor_hash, cursor = best.hash, best.sealed.header
            while not self._stored(cursor_hash):
                path.append((cursor.height, cursor_hash))
                parent = self.get_header(cursor.prev_hash)
                if parent is None:
                    break
                cursor_hash, cursor = cursor.prev_hash, parent
            path.reverse()
            self._path, self._path_key = path, best.hash
        while self._path and self._stored(self._path[0][1]):
            self._path.pop(0)
        return list(self._path)
