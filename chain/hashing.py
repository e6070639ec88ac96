"""Every hash the protocol takes: BLAKE2b-256 with a personalisation tag per purpose, and Merkle trees.

Domain separation uses BLAKE2b's 16-byte ``person`` parameter, so a transaction hash can never be
mistaken for a block hash or a Merkle node even when the input bytes coincide.

Merkle trees (normative, see docs/protocol.md): leaves are ``H_leaf(data)``, inner nodes
``H_node(left || right)``; an odd node at the end of a level is promoted unchanged (no duplication,
which avoids the CVE-2012-2459 ambiguity); the root of zero leaves is ``H_leaf(b"")`` of the
empty tree tag. A proof is the list of sibling hashes bottom-up; the leaf index and the leaf count
decide at each level whether a sibling exists and on which side it sits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from chain.errors import InvalidEncoding, Reason

HASH_SIZE = 32


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BLAKE2b-256 of ``data`` personalised with ``tag`` (at most 16 ASCII bytes)."""
    person = tag.encode("ascii")
    if len(person) > 16:
        raise ValueError(f"hash tag too long: {tag!r}")
    return hashlib.blake2b(data, digest_size=HASH_SIZE, person=person).digest()


def hash_bytes(data: bytes) -> bytes:
    """Plain BLAKE2b-256 (no tag), for content ids such as dataset hashes."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


def address_hash(pubkey: bytes) -> bytes:
    """The 20-byte account id of a compressed public key."""
    return hashlib.blake2b(pubkey, digest_size=20, person=b"pouw/address").digest()


def merkle_leaf(data: bytes) -> bytes:
    return tagged_hash("pouw/mk-leaf", data)


def merkle_node(left: bytes, right: bytes) -> bytes:
    return tagged_hash("pouw/mk-node", left + right)


EMPTY_MERKLE_ROOT = tagged_hash("pouw/mk-empty", b"")


def merkle_root_of_hashes(level: Sequence[bytes]) -> bytes:
    """Root over already-hashed leaves."""
    if not level:
        return EMPTY_MERKLE_ROOT
    nodes = list(level)
    while len(nodes) > 1:
        nxt = [merkle_node(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    return nodes[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves are ``merkle_leaf(x)`` for each ``x``."""
    return merkle_root_of_hashes([merkle_leaf(x) for x in leaves])


def merkle_proof_of_hashes(level: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling path for leaf ``index`` of a tree built over already-hashed leaves."""
    if not 0 <= index < len(level):
        raise IndexError(f"leaf {index} out of range for {len(level)} leaves")
    nodes = list(level)
    path: list[bytes] = []
    while len(nodes) > 1:
        sibling = index ^ 1
        if sibling < len(nodes):
            path.append(nodes[sibling])
        nxt = [merkle_node(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
        index //= 2
    return path


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return merkle_proof_of_hashes([merkle_leaf(x) for x in leaves], index)


def merkle_root_from_proof(leaf_hash: bytes, index: int, n_leaves: int, path: Sequence[bytes]) -> bytes:
    """Recompute the root from a leaf hash and its path; raises if the path has the wrong length."""
    if not 0 <= index < n_leaves:
        raise InvalidEncoding(Reason.OUT_OF_RANGE, f"leaf index {index} of {n_leaves}")
    node = leaf_hash
    width = n_leaves
    used = 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used >= len(path):
                raise InvalidEncoding(Reason.MALFORMED, "merkle path too short")
            other = path[used]
            used += 1
            node = merkle_node(other, node) if index & 1 else merkle_node(node, other)
        index //= 2
        width = (width + 1) // 2
    if used != len(path):
        raise InvalidEncoding(Reason.MALFORMED, "merkle path too long")
    return node


def verify_merkle_proof(
    root: bytes, leaf_hash: bytes, index: int, n_leaves: int, path: Sequence[bytes]
) -> bool:
    try:
        return merkle_root_from_proof(leaf_hash, index, n_leaves, path) == root
    except InvalidEncoding:
        return False
