"""Merkle trees and tagged hashes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chain.hashing import (
    EMPTY_MERKLE_ROOT,
    merkle_leaf,
    merkle_proof,
    merkle_root,
    tagged_hash,
    verify_merkle_proof,
)


def test_tags_separate_domains() -> None:
    assert tagged_hash("pouw/a", b"x") != tagged_hash("pouw/b", b"x")
    assert len(tagged_hash("pouw/a", b"x")) == 32


def test_empty_and_single() -> None:
    assert merkle_root([]) == EMPTY_MERKLE_ROOT
    assert merkle_root([b"a"]) == merkle_leaf(b"a")


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_every_proof_verifies_and_wrong_ones_fail(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle_root(leaves)
    n = len(leaves)
    for i in range(n):
        path = merkle_proof(leaves, i)
        assert verify_merkle_proof(root, merkle_leaf(leaves[i]), i, n, path)
    i = data.draw(st.integers(0, n - 1))
    path = merkle_proof(leaves, i)
    assert not verify_merkle_proof(root, merkle_leaf(leaves[i] + b"!"), i, n, path)
    if n > 1:
        j = (i + 1) % n
        if leaves[j] != leaves[i]:
            assert not verify_merkle_proof(root, merkle_leaf(leaves[i]), j, n, merkle_proof(leaves, j))
        assert not verify_merkle_proof(root, merkle_leaf(leaves[i]), i, n, path[:-1])
    assert not verify_merkle_proof(root, merkle_leaf(leaves[i]), i, n, [*path, bytes(32)])


def test_odd_promotion_is_not_duplication() -> None:
    # Bitcoin's duplicate-last rule makes [a, b, c] and [a, b, c, c] collide; ours must not.
    assert merkle_root([b"a", b"b", b"c"]) != merkle_root([b"a", b"b", b"c", b"c"])
