"""Every tunable of the p2p layer in one immutable value: timeouts, bounds, rate limits.

Defaults suit a public network; tests pass a :class:`P2PConfig` with short timeouts. None of these is
consensus: two nodes with different settings still talk (docs/protocol.md Part VII, "Limits").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from chain.encoding import Container
from p2p.messages import (
    MAX_FRAME_BYTES,
    Addr,
    BlockMessage,
    GetAddr,
    GetData,
    GetHeaders,
    Headers,
    Inv,
    NotFound,
    Ping,
    Pong,
    Reject,
    TxMessage,
    Verack,
    Version,
)

KIB = 1024
MIB = 1024 * KIB


class MessageClass(StrEnum):
    """Messages share a rate limit with others of their class."""

    CONTROL = "control"
    INVENTORY = "inventory"
    DATA = "data"


CLASS_OF: Mapping[type[Container], MessageClass] = MappingProxyType({
    Version: MessageClass.CONTROL,
    Verack: MessageClass.CONTROL,
    Ping: MessageClass.CONTROL,
    Pong: MessageClass.CONTROL,
    Reject: MessageClass.CONTROL,
    GetAddr: MessageClass.CONTROL,
    Addr: MessageClass.CONTROL,
    Inv: MessageClass.INVENTORY,
    GetData: MessageClass.INVENTORY,
    NotFound: MessageClass.INVENTORY,
    GetHeaders: MessageClass.INVENTORY,
    Headers: MessageClass.DATA,
    BlockMessage: MessageClass.DATA,
    TxMessage: MessageClass.DATA,
})


@dataclass(frozen=True)
class RateLimit:
    """Two token buckets: messages and bytes. Each burst must admit the class's largest message."""

    messages_per_s: float
    message_burst: float
    bytes_per_s: float
    byte_burst: float


DEFAULT_RATE_LIMITS: Mapping[MessageClass, RateLimit] = MappingProxyType({
    MessageClass.CONTROL: RateLimit(20, 100, 256 * KIB, 1 * MIB),
    MessageClass.INVENTORY: RateLimit(100, 500, 4 * MIB, 16 * MIB),
    MessageClass.DATA: RateLimit(1_000, 5_000, 64 * MIB, 2 * MAX_FRAME_BYTES),
})


@dataclass(frozen=True)
class P2PConfig:
    user_agent: str = "pouw-chain/0.1"
    max_message_bytes: int = MAX_FRAME_BYTES
    """Frames above this are refused by the transport before they are buffered whole."""

    # timeouts (seconds)
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    close_timeout: float = 2.0
    """How long closing a link waits for the other side's close frame."""
    ping_interval: float = 30.0
    ping_timeout: float = 20.0
    idle_timeout: float = 120.0
    """No frame at all for this long (pings included) drops the link."""
    headers_timeout: float = 30.0
    """An unanswered getheaders may be re-sent after this."""
    block_timeout: float = 20.0
    """A requested block not delivered by then is asked of another peer (a stall)."""
    tx_request_timeout: float = 30.0
    inv_interval: float = 0.2
    """Announcements are batched per peer and flushed this often."""
    connect_interval: float = 2.0
    """How often the dialler tops up outbound links."""
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0

    # bounds
    inbox_messages: int = 64
    outbox_messages: int = 128
    known_inventory: int = 20_000
    """Per peer: hashes it is known to have (never announced back to it)."""
    recent_rejects: int = 50_000
    tx_requests: int = 50_000
    blocks_in_flight_per_peer: int = 16
    download_window: int = 1_024
    """Blocks requested or held out of order at most, counting from the first missing one."""
    max_orphan_bytes: int = 256 * MIB
    max_getdata_blocks: int = 128
    max_stalls: int = 3
    max_unconnecting_headers: int = 8
    address_book_size: int = 1_000
    max_bans: int = 10_000
    discover: bool = True
    """Dial addresses learnt from peers (besides the ``connect`` list) up to ``max_outbound``."""

    # connection limits (docs/protocol.md Part VII, "Connection limits")
    upgrade_timeout: float = 5.0
    """An accepted TCP connection that has not completed its WebSocket upgrade by then is closed
    (a half-sent upgrade request costs its sender one socket for at most this long)."""
    max_pending_inbound: int = 32
    """Inbound connections not yet past the handshake (upgrading or handshaking), all hosts."""
    max_pending_per_host: int = 4
    """The same, per IP address."""
    max_inbound_per_host: int = 4
    """Inbound links (upgraded) from one IP address."""
    max_inbound_per_group: int = 8
    """Inbound links from one network group (/16 IPv4, /32 IPv6)."""
    fd_reserve: int = 512
    """File descriptors kept for everything but p2p sockets (LevelDB's files and log, the HTTP
    API, the verification pool): p2p sockets never use more than RLIMIT_NOFILE minus this."""
    max_open_files: int | None = None
    """The file-descriptor limit to plan with; None reads (and tries to raise) RLIMIT_NOFILE."""
    allow_private_addresses: bool | None = None
    """Addresses peers send us that are loopback, private or link-local: True stores and dials
    them, False never does, None (default) only when the sending peer is itself in that scope or
    a narrower one (a loopback peer may name loopback addresses, a LAN peer LAN addresses; a
    public peer only public ones). The ``connect`` list and manual connects are always dialled."""

    # upload (serving GetData)
    upload_bytes_per_s: float = 8 * MIB
    """Block and transaction bytes served to one peer per second, on average."""
    upload_burst_bytes: float = 64 * MIB
    """Bytes one peer may take at once before the rate applies (at least the largest block)."""
    served_memory: int = 1_024
    """Per peer: objects recently served to it; asking for one again gets NotFound and scores."""

    ban_file: str = "banlist.json"
    rate_limits: Mapping[MessageClass, RateLimit] = field(default_factory=lambda: DEFAULT_RATE_LIMITS)
