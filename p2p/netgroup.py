"""Who an address belongs to: network groups, address scopes, and which inbound peer to evict.

* :func:`address_group` — the /16 of an IPv4 address, the /32 of an IPv6 one (an attacker's cheap
  addresses mostly share one); IPv4-mapped IPv6 counts as IPv4.
* :func:`scope_of` / :func:`may_learn` — whether an address a peer gave us may be stored and dialled:
  globally routable ones always; loopback, private and link-local ones only when configured, or (the
  default) when the peer that sent them is itself in that scope or a narrower one (a loopback peer is
  a process on this machine; a LAN peer is on our LAN anyway). A public peer can never make us dial
  our own machine or LAN.
* :func:`select_eviction` — Bitcoin Core's ``AttemptToEvictConnection``: when inbound slots are full,
  protect the peers an attacker finds hardest to imitate (distinct groups, lowest latency, recent
  useful blocks and transactions, longest connected), then evict the youngest link of the group
  with the most links left.

docs/protocol.md Part VII, "Connection limits", gives the numbers.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_group(host: str) -> str:
    """The network group of ``host``: ``"v4:a.b"`` (/16), ``"v6:xxxx:xxxx"`` (/32), else the text."""
    address = _ip(host)
    if isinstance(address, ipaddress.IPv4Address):
        a, b = address.packed[:2]
        return f"v4:{a}.{b}"
    if isinstance(address, ipaddress.IPv6Address):
        return "v6:" + address.packed[:4].hex()
    return "name:" + host


class Scope(IntEnum):
    """How far an address is reachable, narrowest first."""

    LOOPBACK = 0
    LINK_LOCAL = 1
    PRIVATE = 2
    """RFC 1918, unique-local IPv6, CGNAT, documentation and other non-global ranges."""
    PUBLIC = 3


def scope_of(host: str) -> Scope | None:
    """The scope of an IP literal; None for anything that is not one, or never dialable."""
    address = _ip(host)
    if address is None or address.is_unspecified or address.is_multicast:
        return None
    if address.is_loopback:
        return Scope.LOOPBACK
    if address.is_link_local:
        return Scope.LINK_LOCAL
    if address.is_reserved:
        return None
    if address.is_global:
        return Scope.PUBLIC
    return Scope.PRIVATE


def may_learn(address_host: str, sender_host: str, allow_private: bool | None) -> bool:
    """May an address heard from the peer at ``sender_host`` be stored and dialled?

    ``allow_private``: True accepts any dialable scope, False only public addresses, None (the
    default) accepts a non-public address only from a sender in the same or a narrower scope.
    """
    scope = scope_of(address_host)
    if scope is None:
        return False
    if scope is Scope.PUBLIC or allow_private:
        return True
    if allow_private is False:
        return False
    sender = scope_of(sender_host)
    return sender is not None and sender <= scope


P = TypeVar("P")


@dataclass(frozen=True)
class EvictionCandidate(Generic[P]):
    """What eviction looks at for one ready inbound peer (times are loop seconds)."""

    peer: P
    group: str
    connected_at: float
    latency: float | None
    last_block_at: float | None
    """When it last sent us a block we accepted (None: never)."""
    last_tx_at: float | None
    """When it last sent us a transaction we accepted (None: never)."""


PROTECT_BY_GROUP = 4
PROTECT_BY_LATENCY = 8
PROTECT_BY_TX = 4
PROTECT_BY_BLOCK = 4
PROTECT_LONGEST_FRACTION = 2
"""Half of what is left after the other protections is protected by connection time."""


def _protect(
    candidates: list[EvictionCandidate[P]], count: int,
    key: Callable[[EvictionCandidate[P]], tuple[float | int | bytes, ...]],
) -> list[EvictionCandidate[P]]:
    """Drop the ``count`` candidates with the *largest* ``key`` (they are protected)."""
    if count <= 0 or not candidates:
        return candidates
    ranked = sorted(candidates, key=key)
    return ranked[: max(len(ranked) - count, 0)]


def select_eviction(
    candidates: Sequence[EvictionCandidate[P]], *, secret: bytes,
) -> P | None:
    """The peer to evict to make room for a new inbound link, or None if every one is protected.

    ``secret`` keys the group protection, so an attacker cannot tell which groups are protected and
    pick the others. Deterministic for given inputs.
    """
    left = list(candidates)

    def keyed_group(c: EvictionCandidate[P]) -> tuple[bytes]:
        return (hashlib.blake2b(c.group.encode(), key=secret[:64], digest_size=8).digest(),)

    # Distinct groups: protect one peer in each of PROTECT_BY_GROUP groups chosen by keyed hash.
    by_group: dict[str, list[EvictionCandidate[P]]] = {}
    for c in left:
        by_group.setdefault(c.group, []).append(c)
    chosen = sorted(by_group, key=lambda g: keyed_group(by_group[g][0]), reverse=True)[:PROTECT_BY_GROUP]
    protected = {id(min(by_group[g], key=lambda c: c.connected_at)) for g in chosen}
    left = [c for c in left if id(c) not in protected]
    # Lowest latency (unknown counts as worst): protected.
    # Ties go to the longer connected peer (a newcomer never wins a tie), as in Core.
    left = _protect(left, PROTECT_BY_LATENCY,
                    lambda c: (-(c.latency if c.latency is not None else float("inf")), -c.connected_at))
    # Most recent useful transactions and blocks: protected.
    left = _protect(left, PROTECT_BY_TX,
                    lambda c: (c.last_tx_at is not None, c.last_tx_at or 0.0, -c.connected_at))
    left = _protect(left, PROTECT_BY_BLOCK,
                    lambda c: (c.last_block_at is not None, c.last_block_at or 0.0, -c.connected_at))
    # Longest connected: half of the rest.
    left = _protect(left, len(left) // PROTECT_LONGEST_FRACTION, lambda c: (-c.connected_at,))
    if not left:
        return None
    # The group with the most links left (ties: the one whose newest link is youngest) loses its
    # youngest link.
    groups: dict[str, list[EvictionCandidate[P]]] = {}
    for c in left:
        groups.setdefault(c.group, []).append(c)
    worst = max(groups.values(), key=lambda cs: (len(cs), max(c.connected_at for c in cs)))
    return max(worst, key=lambda c: c.connected_at).peer
