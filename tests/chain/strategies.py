"""Hypothesis strategies derived from the containers' wire schemas, so every type gets round-trip tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from chain.encoding import (
    BigUInt,
    Bool,
    Bytes,
    Container,
    ListOf,
    Nested,
    SInt,
    Text,
    UInt,
    Union,
    Wire,
)


def for_wire(kind: Wire) -> st.SearchStrategy[Any]:
    if isinstance(kind, UInt):
        return st.integers(0, kind.limit - 1)
    if isinstance(kind, SInt):
        return st.integers(kind.lo, kind.hi)
    if isinstance(kind, BigUInt):
        return st.integers(0, kind.limit - 1)
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, Bytes):
        if kind.size is not None:
            return st.binary(min_size=kind.size, max_size=kind.size)
        return st.binary(max_size=min(kind.max_len, 64))
    if isinstance(kind, Text):
        return st.text(max_size=kind.max_bytes // 4)
    if isinstance(kind, ListOf):
        return st.lists(for_wire(kind.item), max_size=min(kind.max_len, 4)).map(tuple)
    if isinstance(kind, Nested):
        return for_container(kind.cls)
    if isinstance(kind, Union):
        return st.one_of([for_container(cls) for cls in kind.by_tag.values()])
    raise TypeError(kind)


def for_container(cls: type[Container]) -> st.SearchStrategy[Any]:
    fields = {f.name: for_wire(f.metadata["wire"]) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.builds(cls, **fields)
