"""The wire messages nodes exchange, their limits, and the one codec that turns frames into messages.

Every message is a canonical :class:`~chain.encoding.Container`; a frame is the tagged union
``[tag, [fields...]]`` of exactly one of them (docs/protocol.md Part VII, "Message catalogue"). Each type has
a byte cap, checked on the raw frame *before* anything is decoded (the tag is the frame's second
byte), and its lists have item caps checked while decoding. Any frame that is not the canonical
encoding of a message within its limits raises :class:`MalformedMessage` (or its subclass
:class:`OversizedMessage`); nothing else escapes :func:`decode_message`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias, cast

from chain.encoding import (
    MAX_MESSAGE_BYTES,
    BigUInt,
    Container,
    ListOf,
    Nested,
    Text,
    UInt,
    Union,
    pack,
    unpack,
    wire,
)
from chain.errors import InvalidEncoding, Reason
from chain.types import HASH32, MAX_DATASET_BYTES, Block, Header, Seal, SealedHeader, SignedTx

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1

MAX_USER_AGENT_BYTES = 64
MAX_INV_ITEMS = 5_000
MAX_LOCATOR_HASHES = 64
MAX_HEADERS = 2_000
MAX_ADDRS = 1_000
MAX_HOST_BYTES = 64
MAX_REJECT_TEXT = 256

MAX_FRAME_BYTES = MAX_MESSAGE_BYTES
"""Global cap on one frame; the transport refuses anything larger before it is buffered whole."""
MAX_HEADERS_BYTES = 8 * 1024 * 1024
"""A headers message stops early rather than exceed this (seals carry proofs of up to 256 KiB)."""

_HASH_ITEM_BYTES = 34  # a 32-byte bin: 2 bytes of header + 32
_ENVELOPE_BYTES = 16  # [tag, [...]] array headers, the tag, small fields


class InvKind(IntEnum):
    """What an inventory hash names."""

    TX = 1
    BLOCK = 2


_INV_KINDS = frozenset(kind.value for kind in InvKind)


class MalformedMessage(InvalidEncoding):
    """A frame that is not a canonical message within its limits. ``message_type`` when it was known."""

    def __init__(self, reason: Reason, detail: str = "", message_type: str | None = None) -> None:
        super().__init__(reason, detail)
        self.message_type = message_type


class OversizedMessage(MalformedMessage):
    """A frame larger than its message type's byte cap (or the global cap)."""


# ---------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class Version(Container):
    """First message on every link, sent by both sides at once."""

    protocol_version: int = wire(UInt(32))
    chain_id: int = wire(UInt(32))
    genesis_hash: bytes = wire(HASH32)
    best_height: int = wire(UInt(64))
    best_work: int = wire(BigUInt(40))
    user_agent: str = wire(Text(MAX_USER_AGENT_BYTES))
    nonce: int = wire(UInt(64))
    """Random per link; a node that receives one of its own nonces has dialled itself."""
    listen_port: int = wire(UInt(16))
    """Where the sender accepts links (0: it does not), so others can dial it back."""


@dataclass(frozen=True, slots=True)
class Verack(Container):
    """Acknowledges a peer's acceptable Version; the handshake ends when both sides have one."""


@dataclass(frozen=True, slots=True)
class Ping(Container):
    nonce: int = wire(UInt(64))


@dataclass(frozen=True, slots=True)
class Pong(Container):
    nonce: int = wire(UInt(64))


@dataclass(frozen=True, slots=True)
class Inv(Container):
    """Announces objects the sender has (and has validated)."""

    kind: int = wire(UInt(8))
    hashes: tuple[bytes, ...] = wire(ListOf(HASH32, MAX_INV_ITEMS))


@dataclass(frozen=True, slots=True)
class GetData(Container):
    """Asks for the objects themselves; answered with Block/Tx messages and one NotFound for the rest."""

    kind: int = wire(UInt(8))
    hashes: tuple[bytes, ...] = wire(ListOf(HASH32, MAX_INV_ITEMS))


@dataclass(frozen=True, slots=True)
class NotFound(Container):
    kind: int = wire(UInt(8))
    hashes: tuple[bytes, ...] = wire(ListOf(HASH32, MAX_INV_ITEMS))


@dataclass(frozen=True, slots=True)
class GetHeaders(Container):
    """Headers after the first locator hash on the responder's best chain, up to ``stop`` (zero: none)."""

    locator: tuple[bytes, ...] = wire(ListOf(HASH32, MAX_LOCATOR_HASHES))
    stop: bytes = wire(HASH32)




@dataclass(frozen=True, slots=True)
class Headers(Container):
    """Consecutive headers, each the child of the one before; empty when the responder has no more."""

    headers: tuple[SealedHeader, ...] = wire(ListOf(Nested(SealedHeader), MAX_HEADERS))


@dataclass(frozen=True, slots=True)
class BlockMessage(Container):
    block: Block = wire(Nested(Block))


@dataclass(frozen=True, slots=True)
class TxMessage(Container):
    tx: SignedTx = wire(Nested(SignedTx))


@dataclass(frozen=True, slots=True)
class GetAddr(Container):
    """Asks for addresses; answered (once per link) with one Addr."""


@dataclass(frozen=True, slots=True)
class PeerAddress(Container):
    host: str = wire(Text(MAX_HOST_BYTES))
    """An IP address literal; names are refused (no peer can make us resolve DNS)."""
    port: int = wire(UInt(16))
    last_seen: int = wire(UInt(64))
    """Unix seconds when the sender last heard of a live node there (advisory, never trusted)."""


@dataclass(frozen=True, slots=True)
class Addr(Container):
    addresses: tuple[PeerAddress, ...] = wire(ListOf(Nested(PeerAddress), MAX_ADDRS))


@dataclass(frozen=True, slots=True)
class Reject(Container):
    """Courtesy note sent just before a node drops a link, saying why. Never acted upon."""

    code: str = wire(Text(32))
    detail: str = wire(Text(MAX_REJECT_TEXT))


Message: TypeAlias = (
    Version | Verack | Ping | Pong | Inv | GetData | NotFound | GetHeaders | Headers
    | BlockMessage | TxMessage | GetAddr | Addr | Reject
)

TAGS: dict[int, type[Container]] = {
    1: Version,
    2: Verack,
    3: Ping,
    4: Pong,
    5: Inv,
    6: GetData,
    7: NotFound,
    8: GetHeaders,
    9: Headers,
    10: BlockMessage,
    11: TxMessage,
    12: GetAddr,
    13: Addr,
    14: Reject,
}
MESSAGE = Union(TAGS)


def _inv_cap() -> int:
    return _ENVELOPE_BYTES + MAX_INV_ITEMS * _HASH_ITEM_BYTES


BYTE_CAPS: dict[type[Container], int] = {
    Version: 256,
    Verack: _ENVELOPE_BYTES,
    Ping: 32,
    Pong: 32,
    Inv: _inv_cap(),
    GetData: _inv_cap(),
    NotFound: _inv_cap(),
    GetHeaders: _ENVELOPE_BYTES + (MAX_LOCATOR_HASHES + 1) * _HASH_ITEM_BYTES,
    Headers: MAX_HEADERS_BYTES,
    BlockMessage: MAX_FRAME_BYTES,
    TxMessage: MAX_DATASET_BYTES + 4096,
    GetAddr: _ENVELOPE_BYTES,
    Addr: _ENVELOPE_BYTES + MAX_ADDRS * (MAX_HOST_BYTES + 16),
    Reject: 512,
}
"""Largest canonical frame of each type (docs/protocol.md Part VII lists them)."""

_FIXARRAY_2 = 0x92


def message_type_of(frame: bytes) -> type[Container]:
    """The message type a frame claims to be, read from its first two bytes without decoding it.

    A canonical frame is a 2-array (``0x92``) whose first item, the tag, is a positive fixint.
    """
    if len(frame) < 2 or frame[0] != _FIXARRAY_2 or frame[1] not in TAGS:
        raise MalformedMessage(Reason.MALFORMED, "not a tagged message")
    return TAGS[frame[1]]


def encode_message(message: Message) -> bytes:
    """Canonical frame of ``message``."""
    return pack(MESSAGE.to_wire(message))


def decode_message(frame: bytes) -> Message:
    """The message a frame carries; :class:`MalformedMessage` for anything but a canonical one."""
    kind = message_type_of(frame)
    name = kind.__name__
    cap = BYTE_CAPS[kind]
    if len(frame) > cap:
        raise OversizedMessage(Reason.TOO_LONG, f"{name} of {len(frame)} bytes > {cap}", name)
    try:
        message = MESSAGE.from_wire(unpack(frame, max_size=cap))
    except InvalidEncoding as exc:
        raise MalformedMessage(exc.reason, f"{name}: {exc.detail}", name) from exc
    if isinstance(message, Inv | GetData | NotFound) and message.kind not in _INV_KINDS:
        raise MalformedMessage(Reason.OUT_OF_RANGE, f"{name}: unknown inventory kind {message.kind}", name)
    return cast(Message, message)


def sealed_headers(pairs: Iterable[tuple[Header, Seal]]) -> tuple[SealedHeader, ...]:
    return tuple(SealedHeader(header=header, seal=seal) for header, seal in pairs)
