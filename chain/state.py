"""Account state: balances and nonces, job escrow records, published datasets, and the state root.

The state is a sorted map of bytes keys to canonical bytes values (key layout in
:mod:`chain.schema`). Readers see it through :class:`StateReader`; the transition produces a
:class:`StateDiff` (new value, or ``None`` for a deletion, per key). :class:`State` is the in-memory
implementation used by tests and by block building; the LevelDB store implements the same reader.

The post-state commitment (normative) is the Merkle root (:mod:`chain.hashing`) over every entry
in key order, each leaf the canonical encoding of ``[key, value]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from chain import schema
from chain.encoding import Bytes, Container, Nested, Text, UInt, pack, wire
from chain.hashing import merkle_root
from chain.types import ADDRESS, HASH32, MAX_NAME_BYTES, ZERO_ADDRESS, JobSpec

OPEN_ENDED_STEPS = (1 << 64) - 1
"""Steps a built-in (open-ended) job counts towards: ``steps_done`` is a u64, so at 2^30 steps a
second it would take five centuries; such a job never finishes."""


class JobStatus(IntEnum):
    ACTIVE = 1
    FINISHED = 2
    CANCELLED = 3


@dataclass(frozen=True, slots=True)
class Account(Container):
    balance: int = wire(UInt(64))
    nonce: int = wire(UInt(64))


EMPTY_ACCOUNT = Account(balance=0, nonce=0)


@dataclass(frozen=True, slots=True)
class JobRecord(Container):
    """A job on chain: who pays, what is trained, what is left in escrow, and where training stands."""

    owner: bytes = wire(ADDRESS)
    spec: JobSpec = wire(Nested(JobSpec))
    name: str = wire(Text(MAX_NAME_BYTES))
    escrow: int = wire(UInt(64))
    steps_done: int = wire(UInt(64))
    state_hash: bytes = wire(HASH32)
    init_seed: bytes = wire(HASH32)
    status: int = wire(UInt(8))
    created_height: int = wire(UInt(64))
    updated_height: int = wire(UInt(64))

    @property
    def active(self) -> bool:
        return self.status == JobStatus.ACTIVE

    @property
    def open_ended(self) -> bool:
        """A genesis (built-in) job, owned by the zero address: it never runs dry (see
        docs/protocol.md Part I §6), so miners always have useful work."""
        return self.owner == ZERO_ADDRESS

    @property
    def steps_left(self) -> int:
        if self.open_ended:
            return OPEN_ENDED_STEPS - self.steps_done
        return self.spec.total_steps - self.steps_done


@dataclass(frozen=True, slots=True)
class DatasetRecord(Container):
    """A dataset every validator can load: built in, or published on chain by ``txid``."""

    publisher: bytes = wire(ADDRESS)
    name: str = wire(Text(MAX_NAME_BYTES))
    size: int = wire(UInt(64))
    n_features: int = wire(UInt(32))
    n_classes: int = wire(UInt(32))
    txid: bytes = wire(Bytes(32))
    height: int = wire(UInt(64))


class StateReader(Protocol):
    """Read access to a state. ``items`` yields the entries under ``prefix`` in ascending key order."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...


StateDiff = Mapping[bytes, bytes | None]


def merge_sorted(
    base: Iterable[tuple[bytes, bytes]], diff: StateDiff
) -> Iterator[tuple[bytes, bytes]]:
    """Entries of ``base`` with ``diff`` applied, in key order (both inputs need not be merged first)."""
    pending = sorted(diff.items())
    i = 0
    for key, value in base:
        while i < len(pending) and pending[i][0] < key:
            if pending[i][1] is not None:
                yield pending[i][0], pending[i][1]  # type: ignore[misc]
            i += 1
        if i < len(pending) and pending[i][0] == key:
            if pending[i][1] is not None:
                yield key, pending[i][1]  # type: ignore[misc]
            i += 1
        else:
            yield key, value
    for key, new in pending[i:]:
        if new is not None:
            yield key, new


def state_root_of(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    return merkle_root([pack([k, v]) for k, v in entries])


class State:
    """An in-memory state. ``apply`` returns a new State; the original is left as it was."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[bytes, bytes] | None = None) -> None:
        self._data: dict[bytes, bytes] = dict(sorted((data or {}).items()))

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if not prefix:
            return iter(self._data.items())
        return ((k, v) for k, v in self._data.items() if k.startswith(prefix))

    def apply(self, diff: StateDiff) -> State:
        return State(dict(merge_sorted(self.items(), diff)))

    def root(self) -> bytes:
        return state_root_of(self.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self._data == other._data

    def __hash__(self) -> int:
        return hash(self.root())

    def __len__(self) -> int:
        return len(self._data)


# ---------------------------------------------------------------------------------------------
# Typed accessors


def get_account(state: StateReader, address: bytes) -> Account:
    raw = state.get(schema.account_key(address))
    return Account.decode(raw) if raw is not None else EMPTY_ACCOUNT


def get_job(state: StateReader, job_id: bytes) -> JobRecord | None:
    raw = state.get(schema.job_key(job_id))
    return JobRecord.decode(raw) if raw is not None else None


def get_dataset(state: StateReader, dataset_id: bytes) -> DatasetRecord | None:
    raw = state.get(schema.dataset_key(dataset_id))
    return DatasetRecord.decode(raw) if raw is not None else None


def get_dataset_part(state: StateReader, part_id: bytes) -> DatasetRecord | None:
    """A multi-part dataset's part by its id (``dataset_id_of`` its data); see :class:`chain.types.DatasetChunk`."""
    raw = state.get(schema.dataset_part_key(part_id))
    return DatasetRecord.decode(raw) if raw is not None else None


def iter_jobs(state: StateReader) -> Iterator[tuple[bytes, JobRecord]]:
    for key, raw in state.items(schema.STATE_JOB):
        yield key[len(schema.STATE_JOB) :], JobRecord.decode(raw)
