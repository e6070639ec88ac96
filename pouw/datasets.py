"""Training data every validator can rebuild bit for bit, and its content id.

Normative (docs/protocol.md Part III, "Datasets"): features are integers in ``0..63`` (int8 payloads, so
the input layer obeys the matmul operand bound), the feature width is a multiple of 64, labels are
``0..n_classes-1``. The canonical bytes are
``pack(["pouw/dataset/1", n_classes, n_features, x_train, y_train, x_test, y_test])`` with features
as one byte each (row-major) and labels as little-endian uint16; the id is ``hash_bytes`` of them
(the name is a label, not content). A dataset quantized from float features (:mod:`pouw.quantize`)
is a ``pouw/dataset/2`` record: the same seven fields then the scaling as canonical JSON bytes
(``{"high": [...], "low": [...]}``, sorted keys, no spaces), so that anyone predicting with a model
trained on it maps new float rows the same way. Validators never compute with the scaling.

A dataset larger than one transaction goes on chain in parts (Part I §4): each part is itself a
canonical record holding a contiguous slice of the training rows and of the test rows (the same
scaling in each); a ``pouw/dataset-parts/1`` manifest lists the parts' ids, and the dataset it names
is the parts' rows concatenated in manifest order, with the first part's scaling
(:func:`split_parts`, :func:`assemble_parts`). Its id is ``hash_bytes`` of the manifest.

Sources: ``digits`` (sklearn's bundled 8x8 digits, ``q = (v*63 + 8) // 16``, test rows are those
whose index is a multiple of 5), ``synthetic:k=v,...`` (a Prng-driven teacher network labels random
inputs), ``.npz`` files with ``x_train, y_train, x_test, y_test`` (and optionally ``n_classes``) or
``x, y`` (a held-out share drawn by a seed), and ``.csv`` files (features, then an integer label).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.encoding import pack, unpack
from chain.errors import InvalidEncoding, Reason, ValidationError
from chain.hashing import hash_bytes
from chain.types import MAX_DATASET_BYTES, MAX_DATASET_PARTS, DatasetParts
from pouw.model import DIM_QUANTUM, MAX_DIM, PAYLOAD_MAX
from pouw.prng import Prng
from pouw.quantize import Scaling, apply_scaling, check_scaling, fit_scaling, is_float_data, read_csv

FORMAT_TAG = "pouw/dataset/1"
FORMAT_TAG_SCALED = "pouw/dataset/2"
MAX_SCALING_BYTES = 1 << 20
MAX_CLASSES = 4096
MAX_ROWS = 1 << 22
MAX_ENCODED_BYTES = 1 << 31
DIGITS_TEST_EVERY = 5
SYNTHETIC_DEFAULTS = {"n": 4096, "d": 64, "classes": 10, "seed": 0, "hidden": 64}
MAX_SYNTHETIC_HIDDEN = 1024

Features = npt.NDArray[np.int8]
Labels = npt.NDArray[np.int64]


def _bad(detail: str) -> ValidationError:
    return ValidationError(Reason.BAD_DATASET, detail)


def _features(x: Any, what: str) -> Features:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu" or arr.ndim != 2:
        raise _bad(f"{what} must be a 2-D integer array, got {arr.dtype} with {arr.ndim} dims")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > PAYLOAD_MAX):
        raise _bad(f"{what} values must lie in 0..{PAYLOAD_MAX}")
    out = arr.astype(np.int8)
    out.setflags(write=False)
    return out


def _labels(y: Any, n_rows: int, n_classes: int, what: str) -> Labels:
    arr = np.asarray(y)
    if arr.dtype.kind not in "iu" or arr.ndim != 1 or len(arr) != n_rows:
        raise _bad(f"{what} must be {n_rows} integer labels")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_classes):
        raise _bad(f"{what} values must lie in 0..{n_classes - 1}")
    out = arr.astype(np.int64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Dataset:
    """Validated, read-only train and test splits. Build one with :func:`load_dataset`."""

    name: str
    x_train: Features
    y_train: Labels
    x_test: Features
    y_test: Labels
    n_classes: int
    scaling: Scaling | None = None

    def __post_init__(self) -> None:
        if type(self.n_classes) is not int or not 2 <= self.n_classes <= MAX_CLASSES:
            raise _bad(f"n_classes {self.n_classes!r} not in [2, {MAX_CLASSES}]")
        x_train = _features(self.x_train, "x_train")
        x_test = _features(self.x_test, "x_test")
        width = x_train.shape[1]
        if x_test.shape[1] != width or not DIM_QUANTUM <= width <= MAX_DIM or width % DIM_QUANTUM:
            raise _bad(f"feature widths {width}/{x_test.shape[1]} must agree, multiples of 64")
        if not 1 <= len(x_train) <= MAX_ROWS or len(x_test) > MAX_ROWS:
            raise _bad(f"need 1..{MAX_ROWS} training rows and at most as many test rows")
        object.__setattr__(self, "x_train", x_train)
        object.__setattr__(self, "x_test", x_test)
        object.__setattr__(self, "y_train", _labels(self.y_train, len(x_train), self.n_classes, "y_train"))
        object.__setattr__(self, "y_test", _labels(self.y_test, len(x_test), self.n_classes, "y_test"))

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    def encode(self) -> bytes:
        fields: list[Any] = [
            FORMAT_TAG if self.scaling is None else FORMAT_TAG_SCALED, self.n_classes, self.n_features,
            self.x_train.tobytes(), self.y_train.astype("<u2").tobytes(),
            self.x_test.tobytes(), self.y_test.astype("<u2").tobytes(),
        ]  # fmt: skip
        if self.scaling is not None:
            fields.append(scaling_bytes(self.scaling))
        return pack(fields)

    @functools.cached_property
    def id(self) -> bytes:
        """Content hash: ``hash_bytes(encode())``."""
        return hash_bytes(self.encode())

    @classmethod
    def decode(cls, data: bytes, name: str = "") -> Dataset:
        """Inverse of :meth:`encode`; malformed bytes raise :class:`InvalidEncoding`."""
        obj = unpack(data, max_size=MAX_ENCODED_BYTES)
        scaled = type(obj) is list and len(obj) == 8 and obj[0] == FORMAT_TAG_SCALED
        if type(obj) is not list or not (scaled or (len(obj) == 7 and obj[0] == FORMAT_TAG)):
            raise InvalidEncoding(Reason.MALFORMED, f"not a {FORMAT_TAG} or {FORMAT_TAG_SCALED} record")
        _, n_classes, width, xtr, ytr, xte, yte = obj[:7]
        scaling = _decode_scaling(obj[7], width) if scaled else None
        if type(n_classes) is not int or type(width) is not int or width <= 0:
            raise InvalidEncoding(Reason.WRONG_TYPE, "n_classes and n_features are integers")
        if not all(type(b) is bytes for b in (xtr, ytr, xte, yte)):
            raise InvalidEncoding(Reason.WRONG_TYPE, "arrays travel as bytes")

        def split(x_raw: bytes, y_raw: bytes) -> tuple[Features, Labels]:
            if len(y_raw) % 2 or len(x_raw) != width * (len(y_raw) // 2):
                raise InvalidEncoding(Reason.MALFORMED, "feature and label lengths disagree")
            x = np.frombuffer(x_raw, dtype=np.uint8).reshape(-1, width)
            return x, np.frombuffer(y_raw, dtype="<u2")  # type: ignore[return-value]

        try:
            return cls(name, *split(xtr, ytr), *split(xte, yte), n_classes=n_classes, scaling=scaling)
        except ValidationError as exc:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, exc.detail) from exc


def scaling_bytes(scaling: Scaling) -> bytes:
    """The canonical bytes of a scaling record."""
    record: dict[str, Any] = {"high": scaling["high"], "low": scaling["low"]}
    if scaling.get("bias"):
        record["bias"] = True
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _decode_scaling(raw: Any, width: int) -> Scaling:
    if type(raw) is not bytes or len(raw) > MAX_SCALING_BYTES:
        raise InvalidEncoding(Reason.WRONG_TYPE, "the scaling travels as at most 1 MiB of bytes")
    try:
        scaling = check_scaling(json.loads(raw), width)
    except (ValueError, ValidationError) as exc:
        raise InvalidEncoding(Reason.MALFORMED, f"bad feature scaling: {exc}") from None
    if scaling_bytes(scaling) != raw:
        raise InvalidEncoding(Reason.MALFORMED, "feature scaling is not in canonical form")
    return scaling


def load_dataset(name_or_path: str, test_share: float = 0.2, seed: int = 0) -> Dataset:
    """``digits``, ``synthetic:n=..,d=..,classes=..,seed=..[,test=..,hidden=..]``, a ``.npz`` or a
    ``.csv`` path (``test_share``/``seed``: the held-out split of a file that has none)."""
    if name_or_path == "digits":
        return digits()
    if name_or_path == "synthetic" or name_or_path.startswith("synthetic:"):
        return synthetic(**parse_synthetic(name_or_path))
    if name_or_path.endswith(".npz"):
        return load_npz(name_or_path, test_share, seed)
    if name_or_path.endswith(".csv"):
        try:
            table = read_csv(name_or_path)
        except FileNotFoundError as exc:
            raise ValidationError(Reason.UNKNOWN_DATASET, f"no such file {name_or_path!r}") from exc
        if table.shape[1] < 2:
            raise _bad(f"{name_or_path!r} needs at least one feature column and a label column")
        labels = table[:, -1]
        if not np.array_equal(labels, np.round(labels)) or labels.min(initial=0) < 0:
            raise _bad("the last .csv column holds the labels: non-negative integers")
        return from_arrays(os.path.basename(name_or_path), *split_rows(table[:, :-1], labels.astype(np.int64),
                                                                        test_share, seed))
    raise ValidationError(Reason.UNKNOWN_DATASET, f"unknown dataset {name_or_path!r}")


@functools.cache
def digits() -> Dataset:
    """sklearn's 1797 bundled digits, features ``(v*63 + 8) // 16``, every 5th row held out."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.data).astype(np.int64)
    x = (raw * PAYLOAD_MAX + 8) // 16
    y = np.asarray(bunch.target).astype(np.int64)
    test = np.arange(len(x)) % DIGITS_TEST_EVERY == 0
    return Dataset("digits", x[~test], y[~test], x[test], y[test], n_classes=10)


def parse_synthetic(spec: str) -> dict[str, int]:
    """Parameters of ``synthetic:k=v,...``; unknown keys or non-decimal values are rejected."""
    params = dict(SYNTHETIC_DEFAULTS)
    body = spec.removeprefix("synthetic").removeprefix(":")
    for item in filter(None, body.split(",")):
        match = re.fullmatch(r"(n|d|classes|seed|test|hidden)=(0|[1-9][0-9]{0,9})", item.strip())
        if match is None:
            raise ValidationError(Reason.UNKNOWN_DATASET, f"bad synthetic parameter {item!r}")
        params[match.group(1)] = int(match.group(2))
    params.setdefault("test", params["n"] // 4)
    return params


def synthetic(n: int, d: int, classes: int, seed: int, test: int, hidden: int) -> Dataset:
    """Teacher-student data: uniform inputs labelled by a random integer ReLU network.

    ``Prng("pouw/synthetic", n, test, d, classes, hidden, seed)`` yields, in order: ``(n+test)*d``
    bytes whose low 6 bits are the features; teacher weights ``T1`` (d x hidden) and ``T2``
    (hidden x classes), each ``randbelow(255) - 127`` row-major. The label of ``x`` is the first
    argmax of ``relu((x - 32) @ T1) @ T2`` (exact int64). The first ``n`` rows train.
    """
    if not 1 <= n <= MAX_ROWS or not 0 <= test <= MAX_ROWS:
        raise _bad(f"synthetic sizes n={n}, test={test} out of range")
    if not 1 <= hidden <= MAX_SYNTHETIC_HIDDEN or not 2 <= classes <= MAX_CLASSES:
        raise _bad(f"synthetic hidden={hidden} or classes={classes} out of range")
    if not DIM_QUANTUM <= d <= MAX_DIM or d % DIM_QUANTUM:
        raise _bad(f"synthetic width {d} is not a multiple of 64 in [64, {MAX_DIM}]")
    prng = Prng("pouw/synthetic", n, test, d, classes, hidden, seed)
    rows = n + test
    x = (np.frombuffer(prng.bytes(rows * d), dtype=np.uint8) & PAYLOAD_MAX).reshape(rows, d)
    t1 = (prng.randbelow_array(255, d * hidden) - 127).reshape(d, hidden)
    t2 = (prng.randbelow_array(255, hidden * classes) - 127).reshape(hidden, classes)
    hid = np.maximum((x.astype(np.int64) - 32) @ t1, 0)
    y = np.argmax(hid @ t2, axis=1)
    name = f"synthetic:n={n},d={d},classes={classes},seed={seed},test={test},hidden={hidden}"
    return Dataset(name, x[:n], y[:n], x[n:], y[n:], n_classes=classes)


def split_rows(x: npt.NDArray[Any], y: npt.NDArray[Any], test_share: float,
               seed: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """(x_train, y_train, x_test, y_test): ``round(test_share * rows)`` rows held out, drawn by
    ``Prng("pouw/split", seed)`` (a client's choice, reproducible; not a consensus rule)."""
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise _bad("need a 2-D feature array and one label per row (at least 2 rows)")
    n_test = min(len(x) - 1, round(test_share * len(x)))
    order = np.argsort(Prng("pouw/split", seed).u64s(len(x)), kind="stable")
    test = np.zeros(len(x), dtype=bool)
    test[order[:n_test]] = True
    return x[~test], y[~test], x[test], y[test]


def from_arrays(name: str, x_train: npt.NDArray[Any], y_train: npt.NDArray[Any], x_test: npt.NDArray[Any],
                y_test: npt.NDArray[Any], n_classes: int | None = None) -> Dataset:
    """A dataset from a client's arrays: float features (or integers outside 0..63) are quantized
    with a scaling fitted on the training rows; features are zero-padded to a multiple of 64."""
    labels = np.concatenate([np.asarray(y_train).ravel(), np.asarray(y_test).ravel()])
    if labels.dtype.kind not in "iu":
        raise _bad("labels must be integers")
    classes = int(labels.max(initial=1)) + 1 if n_classes is None else n_classes
    scaling = None
    if is_float_data(x_train) or is_float_data(x_test):
        scaling = fit_scaling(x_train)
        x_train, x_test = apply_scaling(x_train, scaling), apply_scaling(x_test, scaling)
    return Dataset(name, _pad_width(np.asarray(x_train), "x_train"), y_train, _pad_width(np.asarray(x_test), "x_test"),
                   y_test, n_classes=classes, scaling=scaling)


def load_npz(path: str, test_share: float = 0.2, seed: int = 0) -> Dataset:
    """A user's ``.npz``: x_train/y_train/x_test/y_test (or x/y, split by ``test_share``, ``seed``);
    float features are quantized (:func:`from_arrays`)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except FileNotFoundError as exc:
        raise ValidationError(Reason.UNKNOWN_DATASET, f"no such file {path!r}") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise _bad(f"{path!r} is not a readable npz without pickles: {exc}") from exc
    if {"x", "y"} <= arrays.keys() and "x_train" not in arrays:
        arrays.update(zip(("x_train", "y_train", "x_test", "y_test"),
                          split_rows(arrays["x"], arrays["y"], test_share, seed), strict=True))
    missing = {"x_train", "y_train", "x_test", "y_test"} - arrays.keys()
    if missing:
        raise _bad(f"{path!r} lacks {sorted(missing)} (or x and y)")
    n_classes = arrays.get("n_classes")
    if n_classes is not None and (n_classes.shape != () or n_classes.dtype.kind not in "iu"):
        raise _bad("n_classes must be an integer scalar")
    return from_arrays(os.path.basename(path), arrays["x_train"], arrays["y_train"], arrays["x_test"],
                       arrays["y_test"], None if n_classes is None else int(n_classes))


def _pad_width(x: npt.NDArray[Any], what: str) -> npt.NDArray[Any]:
    if x.ndim != 2:
        raise _bad(f"{what} must be 2-D")
    pad = -x.shape[1] % DIM_QUANTUM
    return np.pad(x, ((0, 0), (0, pad))) if pad else x


def split_parts(dataset: Dataset, part_bytes: int = MAX_DATASET_BYTES) -> tuple[DatasetParts, list[bytes]] | None:
    """The manifest and parts (encoded) that publish ``dataset`` in transactions of at most
    ``part_bytes`` of data each, or None when its encoding fits one transaction. Deterministic: the
    fewest equal-as-possible contiguous row slices whose encodings fit."""
    whole = len(dataset.encode())
    if whole <= part_bytes:
        return None
    overhead = len(Dataset(dataset.name, dataset.x_train[:1], dataset.y_train[:1], dataset.x_test[:0],
                           dataset.y_test[:0], dataset.n_classes, dataset.scaling).encode())
    if overhead >= part_bytes // 2:
        raise _bad(f"parts of {part_bytes} bytes are too small for rows of {dataset.n_features} features")
    count = max(2, -(-whole // (part_bytes - overhead)))
    while count <= min(MAX_DATASET_PARTS, dataset.n_train):
        parts = [
            Dataset(dataset.name, xtr, ytr, xte, yte, dataset.n_classes, dataset.scaling).encode()
            for xtr, ytr, xte, yte in zip(*(np.array_split(a, count) for a in (dataset.x_train, dataset.y_train,
                                                                               dataset.x_test, dataset.y_test)),
                                          strict=True)
        ]
        if max(map(len, parts)) <= part_bytes:
            manifest = DatasetParts(n_classes=dataset.n_classes, n_features=dataset.n_features,
                                    part_ids=tuple(hash_bytes(part) for part in parts))
            return manifest, parts
        count += 1
    raise _bad(f"dataset {dataset.name!r} ({whole} bytes) needs more than {MAX_DATASET_PARTS} parts of "
               f"{part_bytes} bytes")


def published_id(dataset: Dataset, part_bytes: int = MAX_DATASET_BYTES) -> bytes:
    """The id ``dataset`` has on chain once published in parts of ``part_bytes``: its own id when it
    fits one transaction, else the hash of its manifest."""
    split = split_parts(dataset, part_bytes)
    return dataset.id if split is None else hash_bytes(split[0].encode())


def assemble_parts(manifest: DatasetParts, parts: list[bytes], name: str = "") -> Dataset:
    """The dataset a manifest names: its parts' rows in order, the first part's scaling. Raises
    InvalidEncoding for parts that are not the manifest's or do not fit it."""
    if [hash_bytes(part) for part in parts] != list(manifest.part_ids):
        raise InvalidEncoding(Reason.MALFORMED, "the parts are not the manifest's")
    decoded = [Dataset.decode(part) for part in parts]
    if any((d.n_features, d.n_classes) != (manifest.n_features, manifest.n_classes) for d in decoded):
        raise InvalidEncoding(Reason.MALFORMED, "a part's shape is not the manifest's")
    try:
        return Dataset(name, np.concatenate([d.x_train for d in decoded]), np.concatenate([d.y_train for d in decoded]),
                       np.concatenate([d.x_test for d in decoded]), np.concatenate([d.y_test for d in decoded]),
                       manifest.n_classes, decoded[0].scaling)
    except ValidationError as exc:
        raise InvalidEncoding(Reason.OUT_OF_RANGE, exc.detail) from exc
