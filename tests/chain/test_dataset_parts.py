"""Multi-part datasets (docs/protocol.md Part I §4): parts, the manifest that assembles them, and
the rejection rules, under the regtest preset's dataset rules."""

from __future__ import annotations

import dataclasses

import pytest

from chain.errors import InvalidBlock, InvalidEncoding, InvalidTransaction, Reason
from chain.hashing import hash_bytes
from chain.state import State, get_dataset, get_dataset_part
from chain.transition import apply_block, transition
from chain.types import (
    MAX_DATASET_PARTS,
    Block,
    DatasetChunk,
    DatasetParts,
    DatasetPublish,
    JobSpec,
    JobSubmit,
    SignedTx,
    TxBody,
    decode_dataset_parts,
    tx_root,
)
from consensus.presets import REGTEST_PRESET
from pouw.datasets import Dataset, assemble_parts, published_id, split_parts, synthetic
from tests.factories import CHAIN_ID, FEE, KEYS, genesis, next_block
from tests.factories import RULES as BASE_RULES
from wallet.txbuild import sign_tx

RULES = dataclasses.replace(BASE_RULES, dataset_shape=REGTEST_PRESET.chain_rules.dataset_shape)
PUBLISHER = KEYS[2]
PART_BYTES = 8 * 1024


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return synthetic(n=300, d=64, classes=4, seed=3, test=60, hidden=8)


def chunk(data: bytes, nonce: int) -> SignedTx:
    return sign(DatasetChunk(chain_id=CHAIN_ID, nonce=nonce, fee=FEE + len(data) + 500, data=data))


def manifest(parts: DatasetParts, nonce: int, name: str = "big") -> SignedTx:
    data = parts.encode()
    return sign(DatasetPublish(chain_id=CHAIN_ID, nonce=nonce, fee=FEE + len(data) + 500, name=name, data=data))


def sign(body: TxBody) -> SignedTx:
    return sign_tx(PUBLISHER, body)


def mine(state: State, parent: Block, txs: list[SignedTx]) -> tuple[Block, State]:
    block = next_block(state, parent, txs, rules=RULES)
    return block, state.apply(apply_block(state, block, RULES))


def split_in_parts(dataset: Dataset) -> tuple[DatasetParts, list[bytes]]:
    split = split_parts(dataset, PART_BYTES)
    assert split is not None
    return split


def publication(parts: DatasetParts, pieces: list[bytes]) -> list[SignedTx]:
    """Every part in order (nonces 0..n-1), then the manifest."""
    return [chunk(piece, i) for i, piece in enumerate(pieces)] + [manifest(parts, len(pieces))]


def reason(state: State, parent: Block, txs: list[SignedTx]) -> Reason:
    empty = next_block(state, parent, rules=RULES)
    with pytest.raises(InvalidBlock) as err:
        transition(state, dataclasses.replace(empty.header, tx_root=tx_root(tuple(txs))), empty.seal, tuple(txs),
                   RULES)
    return err.value.reason


def test_split_and_assemble_round_trip(dataset: Dataset) -> None:
    parts, pieces = split_in_parts(dataset)
    assert len(pieces) == len(parts.part_ids) >= 3 and max(map(len, pieces)) <= PART_BYTES
    whole = assemble_parts(parts, pieces, dataset.name)
    assert whole.encode() == dataset.encode()
    assert published_id(dataset, PART_BYTES) == hash_bytes(parts.encode()) != dataset.id
    assert published_id(dataset) == dataset.id  # fits one transaction: no parts
    assert decode_dataset_parts(parts.encode()) == parts
    assert decode_dataset_parts(dataset.encode()) is None
    with pytest.raises(InvalidEncoding):
        assemble_parts(parts, pieces[::-1])


def test_manifest_registers_the_assembled_dataset_after_its_parts(dataset: Dataset) -> None:
    parts, pieces = split_in_parts(dataset)
    parent, state = genesis()
    # Parts and the manifest may share a block, parts first.
    txs = publication(parts, pieces)
    _, post = mine(state, parent, txs)
    record = get_dataset(post, hash_bytes(parts.encode()))
    assert record is not None and record.size == sum(map(len, pieces))
    assert (record.n_features, record.n_classes) == (64, 4)
    for part_id in parts.part_ids:
        assert get_dataset_part(post, part_id) is not None and get_dataset(post, part_id) is None
    # A job can name it; its dims must fit the parts' shape.
    spec = JobSpec(dims=(64, 64, 64), dataset_id=hash_bytes(parts.encode()), batch_size=64, lr_shift=8,
                   total_steps=10, fee_per_step=1_000)
    block, post2 = mine(post, parent, [])
    job = sign(JobSubmit(chain_id=CHAIN_ID, nonce=len(txs), fee=FEE, spec=spec, name="j"))
    mine(post2, block, [job])


def test_manifest_rejections(dataset: Dataset) -> None:
    parts, pieces = split_in_parts(dataset)
    parent, state = genesis()
    # Manifest before (or without) its last part.
    early = [chunk(piece, i) for i, piece in enumerate(pieces[:-1])] + [manifest(parts, len(pieces) - 1)]
    assert reason(state, parent, early) is Reason.UNKNOWN_DATASET
    assert reason(state, parent, [manifest(parts, 0), chunk(pieces[0], 1)]) is Reason.UNKNOWN_DATASET
    # A part twice.
    assert reason(state, parent, [chunk(pieces[0], 0), chunk(pieces[0], 1)]) is Reason.DATASET_EXISTS
    # A part that is no dataset.
    assert reason(state, parent, [chunk(b"x" * 100, 0)]) is Reason.BAD_DATASET
    # Shape disagreement: the manifest claims 5 classes, the parts have 4.
    all_parts = [chunk(piece, i) for i, piece in enumerate(pieces)]
    wrong = dataclasses.replace(parts, n_classes=5)
    assert reason(state, parent, [*all_parts, manifest(wrong, len(pieces))]) is Reason.BAD_DATASET
    # A part 128 features wide listed in a 64-wide manifest.
    other = synthetic(n=10, d=128, classes=4, seed=1, test=2, hidden=4).encode()
    mixed = DatasetParts(n_classes=4, n_features=64, part_ids=(*parts.part_ids, hash_bytes(other)))
    assert reason(state, parent, [*all_parts, chunk(other, len(pieces)),
                                  manifest(mixed, len(pieces) + 1)]) is Reason.BAD_DATASET
    # Manifest twice.
    once = [*all_parts, manifest(parts, len(pieces))]
    assert reason(state, parent, [*once, manifest(parts, len(pieces) + 1)]) is Reason.DATASET_EXISTS


def test_malformed_manifests() -> None:
    ids = tuple(bytes([i]) * 32 for i in range(3))
    with pytest.raises(InvalidTransaction):
        decode_dataset_parts(DatasetParts(4, 64, (ids[0], ids[0])).encode())
    with pytest.raises(InvalidTransaction):
        decode_dataset_parts(DatasetParts(4, 64, ()).encode())
    with pytest.raises(InvalidTransaction):
        decode_dataset_parts(DatasetParts(4, 64, tuple(i.to_bytes(32, "big") for i in range(MAX_DATASET_PARTS + 1)))
                             .encode())
    with pytest.raises(InvalidTransaction):
        decode_dataset_parts(DatasetParts(4, 64, (b"short",)).encode())
    assert decode_dataset_parts(DatasetParts(4, 64, ids).encode()) == DatasetParts(4, 64, ids)


def test_reorg_keeps_parts_on_the_branch_that_has_them(dataset: Dataset) -> None:
    """Part and manifest records are state: a sibling branch without them lacks them."""
    parts, pieces = split_in_parts(dataset)
    parent, state = genesis()
    txs = publication(parts, pieces)
    _, post = mine(state, parent, txs)
    sibling = next_block(state, parent, [], rules=RULES, salt=b"other")
    post_sibling = state.apply(apply_block(state, sibling, RULES))
    assert get_dataset(post, hash_bytes(parts.encode())) is not None
    assert get_dataset(post_sibling, hash_bytes(parts.encode())) is None
    # Replayed onto the sibling, the same transactions register the same dataset.
    _, replayed = mine(post_sibling, sibling, txs)
    again, first = get_dataset(replayed, hash_bytes(parts.encode())), get_dataset(post, hash_bytes(parts.encode()))
    assert again is not None and first is not None
    assert dataclasses.replace(again, height=first.height) == first and again.height == first.height + 1
