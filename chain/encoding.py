"""Canonical encoding: msgpack arrays in a fixed field order, and the typed containers built on it.

Normative rules (docs/protocol.md, "Encoding"):

* A value is a msgpack array of its fields in declaration order; no maps, no floats, no ext types.
  Integers use msgpack's shortest form, bytes are ``bin``, text is ``str`` (UTF-8).
* Decoding rejects trailing bytes, wrong field counts, wrong types, out-of-range integers,
  over-long bytes/lists/text, and any input that does not re-encode to exactly the same bytes.
  Every such failure is an :class:`~chain.errors.InvalidEncoding`; no other exception escapes.

Containers are frozen, slotted dataclasses whose fields carry a :class:`Wire` in their metadata
(``nonce: int = wire(UInt(64))``). The container owns its canonical bytes (``encode``) and its
decoder (``decode``); hashes are taken by the types themselves through :mod:`chain.hashing`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from chain.errors import InvalidEncoding, Reason

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

C = TypeVar("C", bound="Container")


class Wire:
    """How one field travels: converts to and from the plain msgpack value, checking as it goes."""

    def to_wire(self, value: Any) -> Any:
        raise NotImplementedError

    def from_wire(self, obj: Any) -> Any:
        raise NotImplementedError


class _Scalar(Wire):
    """A wire kind whose encoded form is the value itself, checked both ways."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def to_wire(self, value: Any) -> Any:
        return self.check(value)

    def from_wire(self, obj: Any) -> Any:
        return self.check(obj)


class UInt(_Scalar):
    def __init__(self, bits: int = 64) -> None:
        self.bits = bits
        self.limit = 1 << bits

    def check(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected uint{self.bits}, got {type(value).__name__}")
        value = int(value)  # an IntEnum member travels as its plain value
        if not 0 <= value < self.limit:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, f"{value} does not fit uint{self.bits}")
        return value


class SInt(_Scalar):
    def __init__(self, bits: int = 64) -> None:
        self.bits = bits
        self.lo = -(1 << (bits - 1))
        self.hi = (1 << (bits - 1)) - 1

    def check(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected int{self.bits}, got {type(value).__name__}")
        value = int(value)
        if not self.lo <= value <= self.hi:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, f"{value} does not fit int{self.bits}")
        return value


class BigUInt(Wire):
    """A non-negative integer too wide for msgpack, carried as exactly ``size`` big-endian bytes."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.limit = 1 << (8 * size)

    def to_wire(self, value: Any) -> bytes:
        if type(value) is not int:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected an integer, got {type(value).__name__}")
        if not 0 <= value < self.limit:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, f"{value} does not fit {self.size} bytes")
        return value.to_bytes(self.size, "big")

    def from_wire(self, obj: Any) -> int:
        if type(obj) is not bytes or len(obj) != self.size:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected {self.size} big-endian bytes")
        return int.from_bytes(obj, "big")


class Bool(_Scalar):
    def check(self, value: Any) -> bool:
        if type(value) is not bool:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected bool, got {type(value).__name__}")
        return value


class Bytes(_Scalar):
    """Bytes of exactly ``size`` bytes, or of at most ``max_len`` bytes."""

    def __init__(self, size: int | None = None, max_len: int = MAX_MESSAGE_BYTES) -> None:
        self.size = size
        self.max_len = size if size is not None else max_len

    def check(self, value: Any) -> bytes:
        if type(value) is not bytes:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected bytes, got {type(value).__name__}")
        if self.size is not None and len(value) != self.size:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, f"expected {self.size} bytes, got {len(value)}")
        if len(value) > self.max_len:
            raise InvalidEncoding(Reason.TOO_LONG, f"{len(value)} bytes > {self.max_len}")
        return value


class Text(_Scalar):
    """UTF-8 text of at most ``max_bytes`` encoded bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def check(self, value: Any) -> str:
        if type(value) is not str:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected text, got {type(value).__name__}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidEncoding(Reason.MALFORMED, "text is not valid UTF-8") from exc
        if size > self.max_bytes:
            raise InvalidEncoding(Reason.TOO_LONG, f"text of {size} bytes > {self.max_bytes}")
        return value


class ListOf(Wire):
    def __init__(self, item: Wire, max_len: int) -> None:
        self.item = item
        self.max_len = max_len

    def _check_len(self, value: Any, kind: type) -> None:
        if not isinstance(value, tuple | list):
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected a list, got {type(value).__name__}")
        if type(value) is not kind:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected a list, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise InvalidEncoding(Reason.TOO_LONG, f"{len(value)} items > {self.max_len}")

    def to_wire(self, value: Any) -> list[Any]:
        self._check_len(value, tuple)
        return [self.item.to_wire(v) for v in value]

    def from_wire(self, obj: Any) -> tuple[Any, ...]:
        self._check_len(obj, list)
        return tuple(self.item.from_wire(v) for v in obj)


class Nested(Wire):
    def __init__(self, cls: type[Container]) -> None:
        self.cls = cls

    def to_wire(self, value: Any) -> list[Any]:
        if not isinstance(value, self.cls):
            raise InvalidEncoding(Reason.WRONG_TYPE, f"expected {self.cls.__name__}")
        return value.to_wire()

    def from_wire(self, obj: Any) -> Container:
        return self.cls.from_wire(obj)


class Union(Wire):
    """A tagged union: ``[tag, [fields...]]`` where ``tag`` picks one of several containers."""

    def __init__(self, variants: dict[int, type[Container]]) -> None:
        self.by_tag = dict(variants)
        self.by_cls = {cls: tag for tag, cls in variants.items()}

    def to_wire(self, value: Any) -> list[Any]:
        tag = self.by_cls.get(type(value))
        if tag is None:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"{type(value).__name__} is not a variant")
        return [tag, value.to_wire()]

    def from_wire(self, obj: Any) -> Container:
        if type(obj) is not list or len(obj) != 2:
            raise InvalidEncoding(Reason.WRONG_FIELD_COUNT, "a tagged value is [tag, fields]")
        tag, body = obj
        cls = self.by_tag.get(tag) if type(tag) is int else None
        if cls is None:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, f"unknown variant tag {tag!r}")
        return cls.from_wire(body)


def wire(kind: Wire, **kwargs: Any) -> Any:
    """Declare a container field and how it is encoded."""
    return dataclasses.field(metadata={"wire": kind}, **kwargs)


class Container:
    """Base of every canonically encoded value. Subclasses are frozen, slotted dataclasses."""

    __slots__ = ()

    @classmethod
    def wire_fields(cls) -> tuple[tuple[str, Wire], ...]:
        """(name, wire kind) of each field in declaration order; computed once per class."""
        cached: tuple[tuple[str, Wire], ...] | None = cls.__dict__.get("_wire_fields_cache")
        if cached is None:
            cached = tuple(
                (f.name, f.metadata["wire"]) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            )
            type.__setattr__(cls, "_wire_fields_cache", cached)
        return cached

    def to_wire(self) -> list[Any]:
        return [kind.to_wire(getattr(self, name)) for name, kind in self.wire_fields()]

    @classmethod
    def from_wire(cls: type[C], obj: Any) -> C:
        fields = cls.wire_fields()
        if type(obj) is not list:
            raise InvalidEncoding(Reason.WRONG_TYPE, f"{cls.__name__} must be an array")
        if len(obj) != len(fields):
            raise InvalidEncoding(
                Reason.WRONG_FIELD_COUNT, f"{cls.__name__} has {len(fields)} fields, got {len(obj)}"
            )
        values = {name: kind.from_wire(item) for (name, kind), item in zip(fields, obj, strict=True)}
        return cls(**values)

    def encode(self) -> bytes:
        return pack(self.to_wire())

    @classmethod
    def decode(cls: type[C], data: bytes) -> C:
        return cls.from_wire(unpack(data))


def pack(obj: Any) -> bytes:
    """Canonical bytes of a plain value (ints, bytes, str, bools, None, lists)."""
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEncoding(Reason.WRONG_TYPE, f"cannot encode: {exc}") from exc


def _check_plain(obj: Any, depth: int = 0) -> None:
    if depth > 64:
        raise InvalidEncoding(Reason.MALFORMED, "nesting too deep")
    kind = type(obj)
    if kind is list:
        for item in obj:
            _check_plain(item, depth + 1)
    elif kind not in (int, bytes, str, bool, type(None)):
        raise InvalidEncoding(Reason.WRONG_TYPE, f"{kind.__name__} is not allowed in canonical encoding")


def unpack(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode canonical bytes to a plain value; anything non-canonical is ``InvalidEncoding``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidEncoding(Reason.WRONG_TYPE, "expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise InvalidEncoding(Reason.TOO_LONG, f"{len(data)} bytes > {max_size}")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise InvalidEncoding(Reason.TRAILING_BYTES, "trailing bytes after value") from exc
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise InvalidEncoding(Reason.MALFORMED, f"not msgpack: {type(exc).__name__}") from exc
    _check_plain(obj)
    if pack(obj) != data:
        raise InvalidEncoding(Reason.NON_CANONICAL, "does not re-encode to the same bytes")
    return obj


def decoder(cls: type[C]) -> Callable[[bytes], C]:
    return cls.decode
