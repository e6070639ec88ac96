"""What a peer can do wrong, what it costs, and the ban list that remembers it across restarts.

:data:`PENALTIES` is the one table (docs/protocol.md Part VII, "Misbehaviour"): each :class:`Offence` maps to a
score and an :class:`Action`. Scores add up per link; reaching :data:`BAN_SCORE` bans the address
whatever the action says. ``IGNORE`` offences are harmless (honest nodes commit them through races
or policy differences) unless their score piles up.

:class:`BanList` maps IP addresses to an expiry (Unix seconds) and persists to a JSON file in the
datadir with an atomic replace, so a crash never leaves half a file.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path

from chain.errors import Reason
from p2p.messages import GetData, Inv, MalformedMessage, NotFound, OversizedMessage

log = logging.getLogger(__name__)

BAN_SCORE = 100
DAY = 24 * 60 * 60
HOUR = 60 * 60


class Action(Enum):
    IGNORE = "ignore"
    """Drop the message (if any), keep the link; only the score grows."""
    DISCONNECT = "disconnect"
    BAN = "ban"
    """Disconnect and refuse the address for ``ban_seconds``."""


class Offence(StrEnum):
    OVERSIZED_MESSAGE = "oversized-message"
    MALFORMED_MESSAGE = "malformed-message"
    WRONG_NETWORK = "wrong-network"
    OBSOLETE_VERSION = "obsolete-version"
    SELF_CONNECTION = "self-connection"
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    JUNK_BEFORE_HANDSHAKE = "junk-before-handshake"
    JUNK_AFTER_HANDSHAKE = "junk-after-handshake"
    RATE_LIMITED = "rate-limited"
    TOO_MANY_INV_ITEMS = "too-many-inv-items"
    INVALID_HEADER = "invalid-header"
    NON_CONTINUOUS_HEADERS = "non-continuous-headers"
    UNCONNECTING_HEADERS = "unconnecting-headers"
    INVALID_BLOCK = "invalid-block"
    UNREQUESTED_BLOCK = "unrequested-block"
    INVALID_TX = "invalid-tx"
    REJECTED_TX = "rejected-tx"
    STALLING = "stalling"
    PING_TIMEOUT = "ping-timeout"
    IDLE_TIMEOUT = "idle-timeout"
    SLOW_READER = "slow-reader"
    REPEATED_GETDATA = "repeated-getdata"
    UNREQUESTED_HEADERS = "unrequested-headers"


@dataclass(frozen=True)
class Penalty:
    score: int
    action: Action
    ban_seconds: int = 0


PENALTIES: dict[Offence, Penalty] = {
    # The frame itself is bad: nothing honest sends these.
    Offence.OVERSIZED_MESSAGE: Penalty(100, Action.BAN, DAY),
    Offence.MALFORMED_MESSAGE: Penalty(100, Action.BAN, DAY),
    # Handshake: a peer of another network is misconfigured, not malicious, but never useful.
    Offence.WRONG_NETWORK: Penalty(0, Action.BAN, HOUR),
    Offence.OBSOLETE_VERSION: Penalty(0, Action.DISCONNECT),
    Offence.SELF_CONNECTION: Penalty(0, Action.DISCONNECT),
    Offence.HANDSHAKE_TIMEOUT: Penalty(0, Action.DISCONNECT),
    Offence.JUNK_BEFORE_HANDSHAKE: Penalty(50, Action.DISCONNECT),
    Offence.JUNK_AFTER_HANDSHAKE: Penalty(20, Action.IGNORE),
    # Flooding.
    Offence.RATE_LIMITED: Penalty(10, Action.IGNORE),
    Offence.TOO_MANY_INV_ITEMS: Penalty(50, Action.DISCONNECT),
    Offence.UNREQUESTED_BLOCK: Penalty(10, Action.IGNORE),
    # GetData for blocks already served to this link: answered NotFound; 20 such messages ban.
    Offence.REPEATED_GETDATA: Penalty(5, Action.IGNORE),
    # Chain data: cheap checks failed, or full validation did.
    Offence.INVALID_HEADER: Penalty(100, Action.BAN, DAY),
    Offence.NON_CONTINUOUS_HEADERS: Penalty(100, Action.BAN, DAY),
    Offence.UNCONNECTING_HEADERS: Penalty(20, Action.IGNORE),
    # More than 8 headers we did not ask for: dropped unstored (a late answer is harmless).
    Offence.UNREQUESTED_HEADERS: Penalty(10, Action.IGNORE),
    Offence.INVALID_BLOCK: Penalty(100, Action.BAN, DAY),
    Offence.INVALID_TX: Penalty(10, Action.IGNORE),
    # Harmless: a policy difference (fee, nonce gap, full mempool), not an offence.
    Offence.REJECTED_TX: Penalty(0, Action.IGNORE),
    # Liveness: not malice, but the link is useless.
    Offence.STALLING: Penalty(0, Action.DISCONNECT),
    Offence.PING_TIMEOUT: Penalty(0, Action.DISCONNECT),
    Offence.IDLE_TIMEOUT: Penalty(0, Action.DISCONNECT),
    Offence.SLOW_READER: Penalty(0, Action.DISCONNECT),
}

_INVENTORY_TYPES = {cls.__name__ for cls in (Inv, GetData, NotFound)}


def offence_for(error: MalformedMessage) -> Offence:
    """Which offence a frame that failed to decode commits. An inventory message can only be too
    long by carrying too many hashes, so that is what it is charged with."""
    if error.reason is Reason.TOO_LONG and error.message_type in _INVENTORY_TYPES:
        return Offence.TOO_MANY_INV_ITEMS
    if isinstance(error, OversizedMessage):
        return Offence.OVERSIZED_MESSAGE
    return Offence.MALFORMED_MESSAGE


@dataclass(frozen=True)
class Verdict:
    """What to do about one offence: the link's new score, and the action (``BAN`` with its length)."""

    score: int
    action: Action
    ban_seconds: int


def judge(score: int, offence: Offence) -> Verdict:
    """Apply ``offence`` to a link whose score is ``score``."""
    penalty = PENALTIES[offence]
    total = score + penalty.score
    if penalty.action is Action.BAN:
        return Verdict(total, Action.BAN, penalty.ban_seconds)
    if total >= BAN_SCORE:
        return Verdict(total, Action.BAN, DAY)
    return Verdict(total, penalty.action, 0)


def normalize_host(host: str) -> str:
    """Canonical text of an IP address (IPv4-mapped IPv6 as IPv4); other text is returned as is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class BanList:
    """Banned addresses with their expiry, persisted to ``path`` (JSON, atomic replace)."""

    VERSION = 1

    def __init__(
        self, path: Path, *, capacity: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.capacity = capacity
        self._clock = clock
        self._bans: dict[str, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def is_banned(self, host: str) -> bool:
        entry = self._bans.get(normalize_host(host))
        if entry is None:
            return False
        if entry[0] <= self._clock():
            del self._bans[normalize_host(host)]
            return False
        return True

    def ban(self, host: str, seconds: int, reason: str) -> None:
        """Ban ``host`` until now + ``seconds`` (an existing longer ban is kept)."""
        host = normalize_host(host)
        until = int(self._clock()) + seconds
        current = self._bans.get(host)
        if current is not None and current[0] >= until:
            return
        self._bans[host] = (until, reason)
        if len(self._bans) > self.capacity:
            self._prune()

    def unban(self, host: str) -> None:
        self._bans.pop(normalize_host(host), None)

    def entries(self) -> dict[str, tuple[int, str]]:
        """Live bans: host -> (expiry in Unix seconds, reason)."""
        self._prune()
        return dict(self._bans)

    def _prune(self) -> None:
        now = self._clock()
        self._bans = {h: e for h, e in self._bans.items() if e[0] > now}
        while len(self._bans) > self.capacity:  # drop the soonest to expire
            del self._bans[min(self._bans, key=lambda h: self._bans[h][0])]

    def load(self) -> None:
        """Read the file if there is one; a corrupt file is logged and ignored (bans are advisory)."""
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            bans = raw["bans"] if raw.get("version") == self.VERSION else {}
            loaded = {
                normalize_host(str(host)): (int(entry["until"]), str(entry["reason"]))
                for host, entry in bans.items()
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable ban list %s: %s", self.path, exc)
            return
        self._bans.update(loaded)
        self._prune()

    def to_json(self) -> dict[str, object]:
        """The file's content: every live ban."""
        return {
            "version": self.VERSION,
            "bans": {h: {"until": until, "reason": why} for h, (until, why) in self.entries().items()},
        }

    def save(self) -> None:
        write_json_atomic(self.path, self.to_json())


def write_json_atomic(path: Path, body: object) -> None:
    """Write ``body`` as JSON so that ``path`` holds either the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
