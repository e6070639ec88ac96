"""The p2p layer's bounded bookkeeping: LRU caches, token buckets, the misbehaviour table and ban
list, the address book, locators, the orphan pool and the MemoryBackend's fork choice."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from chain.errors import Reason
from p2p.addrbook import AddressBook, parse_address, retry_delay
from p2p.backend import BlockStatus, HeadersStatus
from p2p.bounded import LruDict, LruSet, TokenBucket
from p2p.messages import MAX_LOCATOR_HASHES
from p2p.misbehavior import (
    BAN_SCORE,
    PENALTIES,
    Action,
    BanList,
    Offence,
    judge,
    normalize_host,
)
from p2p.sync import OrphanPool, locator_heights
from p2p.testing import INVALID_PROOF, MemoryBackend
from tests.factories import RULES, build_chain, genesis


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lru_set_forgets_least_recent() -> None:
    seen: LruSet[int] = LruSet(3)
    for i in range(3):
        seen.add(i)
    seen.add(0)  # refresh 0: 1 is now the oldest
    seen.add(3)
    assert 1 not in seen and {0, 2, 3} <= {i for i in range(4) if i in seen}
    assert len(seen) == 3
    cache: LruDict[str, int] = LruDict(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("c") == 3 and cache.pop("b") == 2


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(5))
    assert not bucket.take(1, 0.0)
    assert bucket.take(1, 0.1) and not bucket.take(1, 0.1)
    assert bucket.available(100.0) == 5  # never above the burst
    assert not bucket.take(6, 100.0)
    assert bucket.take(5, 99.0)  # a clock that steps back refills nothing, takes fine


def test_every_offence_is_in_the_table() -> None:
    assert set(PENALTIES) == set(Offence)
    for offence, penalty in PENALTIES.items():
        assert penalty.score >= 0
        assert (penalty.action is Action.BAN) == (penalty.ban_seconds > 0), offence


def test_scores_accumulate_into_a_ban() -> None:
    score, verdicts = 0, []
    for _ in range(BAN_SCORE // PENALTIES[Offence.UNREQUESTED_BLOCK].score):
        verdict = judge(score, Offence.UNREQUESTED_BLOCK)
        score = verdict.score
        verdicts.append(verdict.action)
    assert verdicts[:-1] == [Action.IGNORE] * (len(verdicts) - 1)
    assert verdicts[-1] is Action.BAN
    assert judge(0, Offence.REJECTED_TX).action is Action.IGNORE
    assert judge(0, Offence.STALLING).action is Action.DISCONNECT
    assert judge(0, Offence.MALFORMED_MESSAGE).action is Action.BAN


def test_ban_list_expires_and_persists(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "bans.json"
    bans = BanList(path, clock=clock)
    bans.ban("10.0.0.1", 60, "malformed-message")
    bans.ban("::ffff:10.0.0.2", 600, "invalid-block")
    bans.ban("10.0.0.1", 10, "shorter")  # a shorter ban never cuts a longer one
    assert bans.is_banned("10.0.0.1") and bans.is_banned("10.0.0.2")
    bans.save()
    assert not list(tmp_path.glob("*.tmp"))
    assert json.loads(path.read_text())["bans"]["10.0.0.2"]["reason"] == "invalid-block"

    clock.now += 61
    reloaded = BanList(path, clock=clock)
    reloaded.load()
    assert not reloaded.is_banned("10.0.0.1") and reloaded.is_banned("10.0.0.2")
    assert len(reloaded) == 1


def test_ban_list_survives_a_corrupt_file_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    path.write_text("{not json")
    bans = BanList(path, capacity=3, clock=FakeClock())
    bans.load()
    assert len(bans) == 0
    for i in range(5):
        bans.ban(f"10.0.0.{i}", 100 + i, "x")
    assert len(bans) == 3
    assert not bans.is_banned("10.0.0.0") and bans.is_banned("10.0.0.4")


def test_normalize_host() -> None:
    assert normalize_host("::ffff:127.0.0.2") == "127.0.0.2"
    assert normalize_host("0:0::1") == "::1"
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address("10.1.1.1", default_port=5) == ("10.1.1.1", 5)
    with pytest.raises(ValueError):
        parse_address("10.1.1.1:99999")


def test_address_book_bounds_and_backoff() -> None:
    book = AddressBook(3, retry_min=1.0, retry_max=8.0)
    assert not book.add("example.com", 80, 1)  # names are never kept
    assert not book.add("0.0.0.0", 80, 1) and not book.add("10.0.0.1", 0, 1)
    for i in range(4):
        assert book.add(f"10.0.0.{i}", 9000, 100 + i)
    assert len(book) == 3 and ("10.0.0.0", 9000) not in book
    assert [a.host for a in book.sample(2)] == ["10.0.0.3", "10.0.0.2"]
    book.failed(("10.0.0.3", 9000), now=50.0)
    book.failed(("10.0.0.3", 9000), now=50.0)
    assert book.candidates(51.0, set(), 10) == [("10.0.0.2", 9000), ("10.0.0.1", 9000)]
    assert ("10.0.0.3", 9000) not in book.candidates(51.9, set(), 10)
    assert ("10.0.0.3", 9000) in book.candidates(52.0, set(), 10)  # 2 failures: 2 s
    assert [retry_delay(n, 1.0, 8.0) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_locator_heights() -> None:
    assert locator_heights(0) == [0]
    assert locator_heights(5) == [5, 4, 3, 2, 1, 0]
    heights = locator_heights(10_000)
    assert heights[:10] == list(range(10_000, 9_990, -1))
    assert heights[10:13] == [9_989, 9_985, 9_977] and heights[-1] == 0  # steps 2, 4, 8
    assert heights == sorted(heights, reverse=True)
    assert len(locator_heights(2**64)) <= MAX_LOCATOR_HASHES


def test_orphan_pool_connects_children_and_evicts_oldest() -> None:
    blocks, _ = build_chain(5)
    pool = OrphanPool(max_blocks=3, max_bytes=10**6)
    for block in blocks[1:]:
        pool.add(block, None)
    assert len(pool) == 3 and blocks[1].hash not in pool  # oldest evicted
    assert pool.pop_children(blocks[1].hash) == [(blocks[2], None)]
    assert blocks[2].hash not in pool and len(pool) == 2
    assert pool.discard_descendants(blocks[2].hash) == 2 and len(pool) == 0 and pool.bytes == 0
    small = OrphanPool(max_blocks=100, max_bytes=len(blocks[0].encode()) * 2)
    for block in blocks:
        small.add(block, None)
    assert len(small) == 2 and small.bytes <= small.max_bytes


def test_memory_backend_fork_choice_and_header_checks() -> None:
    prefix, state = build_chain(3)
    short, _ = build_chain(2, start=(prefix[-1], state), salt=b"a")
    long, _ = build_chain(3, start=(prefix[-1], state), salt=b"b")
    backend = MemoryBackend(*genesis(), RULES)
    backend.import_blocks(prefix + short)
    assert backend.tip().hash == short[-1].hash and backend.tip().height == 5
    # Headers of the heavier branch move the best header, not the tip; then its blocks are due.
    outcome = backend.add_headers([(b.header, b.seal) for b in long])
    assert outcome.status is HeadersStatus.OK and outcome.new == 3
    assert backend.blocks_to_fetch(10) == [(4 + i, b.hash) for i, b in enumerate(long)]
    assert backend.block_locator()[0] == long[-1].hash
    assert backend.add_block(long[1]).status is BlockStatus.ORPHAN
    backend.import_blocks(long)
    assert backend.tip().hash == long[-1].hash and backend.blocks_to_fetch(10) == []
    assert backend.active_chain()[-3:] == [b.hash for b in long]
    assert [h.height for h, _ in backend.headers_after([prefix[-1].hash], bytes(32), 10)] == [4, 5, 6]
    assert len(backend.headers_after([b"\x01" * 32], long[0].hash, 10)) == 4  # unknown: from genesis

    child, _ = build_chain(1, start=(long[-1], backend.tip_state()), salt=b"c")
    bad_seal = dataclasses.replace(child[0].seal, proof=INVALID_PROOF)
    rejected = backend.add_headers([(child[0].header, bad_seal)])
    assert rejected.status is HeadersStatus.INVALID and rejected.reason is Reason.BAD_SEAL
    assert backend.add_headers([(long[0].header, long[0].seal)]).new == 0
