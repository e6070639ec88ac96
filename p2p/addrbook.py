"""The address book: where other nodes listen, what we heard of them, and when to try them again.

Entries come from peers' Addr messages and from links that completed a handshake. Only IP literals
are kept (a peer can never make us resolve a name); the book holds at most ``capacity`` entries and
forgets the least recently refreshed. Failed dials back off exponentially (:func:`retry_delay`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2p.bounded import LruDict
from p2p.messages import PeerAddress
from p2p.misbehavior import normalize_host

Address = tuple[str, int]


def retry_delay(attempts: int, minimum: float, maximum: float) -> float:
    """Seconds to wait after ``attempts`` consecutive failures: ``minimum`` doubling up to ``maximum``."""
    return min(maximum, minimum * (2 ** min(max(attempts - 1, 0), 32)))


def parse_address(text: str, default_port: int | None = None) -> Address:
    """``host:port`` or ``[v6]:port`` (or a bare host when ``default_port`` is given)."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, ""
    host = host.strip("[]")
    if not port:
        if default_port is None:
            raise ValueError(f"{text!r} has no port")
        return normalize_host(host), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return normalize_host(host), int(port)


def is_dialable(host: str, port: int) -> bool:
    """An IP literal we could connect to (not unspecified or multicast) and a real port."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return 0 < port < 65536 and not (address.is_unspecified or address.is_multicast)


@dataclass
class AddressEntry:
    host: str
    port: int
    last_seen: int
    """Unix seconds (advisory)."""
    attempts: int = 0
    next_try: float = 0.0
    """Loop time before which we do not dial it again."""

    @property
    def address(self) -> Address:
        return self.host, self.port

    def failed(self, now: float, retry_min: float, retry_max: float) -> None:
        self.attempts += 1
        self.next_try = now + retry_delay(self.attempts, retry_min, retry_max)

    def succeeded(self, now: float, wall_time: int) -> None:
        self.attempts = 0
        self.next_try = now
        self.last_seen = max(self.last_seen, wall_time)


class AddressBook:
    def __init__(self, capacity: int, *, retry_min: float, retry_max: float) -> None:
        self._entries: LruDict[Address, AddressEntry] = LruDict(capacity)
        self._retry = (retry_min, retry_max)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def add(self, host: str, port: int, last_seen: int) -> bool:
        """Remember (or refresh) an address; False if it is not a dialable IP literal."""
        host = normalize_host(host)
        if not is_dialable(host, port):
            return False
        entry = self._entries.get((host, port))
        if entry is None:
            self._entries.put((host, port), AddressEntry(host, port, last_seen))
        elif last_seen > entry.last_seen:
            entry.last_seen = last_seen
            self._entries.put((host, port), entry)
        return True

    def get(self, address: Address) -> AddressEntry | None:
        return self._entries.get(address)

    def failed(self, address: Address, now: float) -> None:
        entry = self._entries.get(address)
        if entry is not None:
            entry.failed(now, *self._retry)

    def succeeded(self, address: Address, now: float, wall_time: int) -> None:
        entry = self._entries.get(address)
        if entry is not None:
            entry.succeeded(now, wall_time)

    def candidates(self, now: float, exclude: set[Address], limit: int) -> list[Address]:
        """Up to ``limit`` addresses due for a dial, most recently seen first."""
        due = [e for e in self._entries.items() if e[1].next_try <= now and e[0] not in exclude]
        due.sort(key=lambda item: -item[1].last_seen)
        return [address for address, _ in due[:limit]]

    def sample(self, limit: int) -> list[PeerAddress]:
        """The ``limit`` most recently seen addresses, as Addr entries."""
        entries = sorted((e for _, e in self._entries.items()), key=lambda e: -e.last_seen)
        return [PeerAddress(host=e.host, port=e.port, last_seen=e.last_seen) for e in entries[:limit]]
