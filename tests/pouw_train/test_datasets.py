"""Datasets: the built-in digits, the synthetic generator, user .npz files, canonical bytes and id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chain.encoding import pack
from chain.errors import InvalidEncoding, Reason, ValidationError
from chain.hashing import hash_bytes
from pouw.datasets import Dataset, digits, load_dataset, parse_synthetic


def test_digits_quantisation_and_split() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    ds = load_dataset("digits")
    assert ds is digits()
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.x_train.dtype == np.int8 and ds.n_classes == 10
    expected = (raw.data.astype(np.int64) * 63 + 8) // 16
    assert np.array_equal(ds.x_test, expected[::5]) and np.array_equal(ds.y_test, raw.target[::5])
    keep = np.arange(1797) % 5 != 0
    assert np.array_equal(ds.x_train, expected[keep]) and np.array_equal(ds.y_train, raw.target[keep])
    assert int(ds.x_train.max()) == 63 and int(ds.x_train.min()) == 0
    assert not ds.x_train.flags.writeable


def test_canonical_bytes_round_trip_and_define_the_id() -> None:
    ds = load_dataset("synthetic:n=100,d=128,classes=7,seed=5")
    data = ds.encode()
    assert ds.id == hash_bytes(data)
    back = Dataset.decode(data, name="copy")
    assert back.id == ds.id and back.name == "copy"
    assert np.array_equal(back.x_train, ds.x_train) and np.array_equal(back.y_test, ds.y_test)


def _bad_encodings() -> list[bytes]:
    ds = load_dataset("synthetic:n=10,d=64,classes=3,seed=1,test=2")
    x, y = ds.x_train.tobytes(), ds.y_train.astype("<u2").tobytes()
    tag = "pouw/dataset/1"
    out_of_range = bytes([64]) + x[1:]
    return [
        ds.encode() + b"\x00",
        pack(["pouw/dataset/2", 3, 64, x, y, b"", b""]),
        pack([tag, 3, 64, x, y, b""]),
        pack([tag, 3, 64, x[:-1], y, b"", b""]),
        pack([tag, 3, 64, x, y + b"\x00", b"", b""]),
        pack([tag, 3, 64, out_of_range, y, b"", b""]),
        pack([tag, 3, 64, x, b"\x09\x00" + y[2:], b"", b""]),  # label 9 of 3 classes
        pack([tag, 1, 64, x, y, b"", b""]),
        pack([tag, 3, 0, x, y, b"", b""]),
        pack([tag, 3, 60, x[:600], y, b"", b""]),
        pack([tag, "3", 64, x, y, b"", b""]),
    ]


@pytest.mark.parametrize("data", _bad_encodings())
def test_decode_rejects_malformed_datasets(data: bytes) -> None:
    with pytest.raises(InvalidEncoding):
        Dataset.decode(data)


def test_synthetic_is_deterministic_and_parameterised() -> None:
    a = load_dataset("synthetic:n=300,d=64,classes=10,seed=1")
    assert a.id == load_dataset("synthetic:seed=1,n=300,classes=10").id
    assert a.id != load_dataset("synthetic:n=300,d=64,classes=10,seed=2").id
    assert a.name == "synthetic:n=300,d=64,classes=10,seed=1,test=75,hidden=64"
    assert a.x_train.shape == (300, 64) and a.x_test.shape == (75, 64)
    assert len(np.unique(a.y_train)) >= 5  # the teacher uses many classes
    assert parse_synthetic("synthetic") == {
        "n": 4096,
        "d": 64,
        "classes": 10,
        "seed": 0,
        "hidden": 64,
        "test": 1024,
    }


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:n=abc",
        "synthetic:foo=1",
        "synthetic:n=-1",
        "synthetic:n=01",
        "synthetic:n=0",
        "synthetic:d=100",
        "synthetic:classes=1",
        "synthetic:hidden=0",
        "mnist",
        "synthetic-n=4",
    ],
)
def test_bad_dataset_names_are_typed_errors(spec: str) -> None:
    with pytest.raises(ValidationError) as err:
        load_dataset(spec)
    assert err.value.reason in (Reason.UNKNOWN_DATASET, Reason.BAD_DATASET)


def _save(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_loads_and_pads_to_a_multiple_of_64(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, xt = rng.integers(0, 64, size=(50, 40)), rng.integers(0, 64, size=(10, 40))
    y, yt = rng.integers(0, 4, size=50), rng.integers(0, 4, size=10)
    ds = load_dataset(_save(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=xt, y_test=yt))
    assert ds.x_train.shape == (50, 64) and ds.n_classes == int(max(y.max(), yt.max())) + 1
    assert np.array_equal(ds.x_train[:, :40], x) and not ds.x_train[:, 40:].any()
    with_classes = _save(tmp_path / "c.npz", x_train=x, y_train=y, x_test=xt, y_test=yt, n_classes=np.array(12))
    assert load_dataset(with_classes).n_classes == 12


def _npz_cases() -> list[dict[str, np.ndarray]]:
    x, y = np.zeros((8, 64), np.uint8), np.zeros(8, np.int64)
    good = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    return [
        {k: v for k, v in good.items() if k != "y_test"},
        dict(good, x_train=np.full((8, 64), np.nan)),
        dict(good, y_train=y - 1),
        dict(good, y_train=y[:5]),
        dict(good, x_train=x[0]),
        dict(good, x_test=np.zeros((8, 128), np.uint8)),
        dict(good, n_classes=np.array([3, 4])),
        dict(good, y_train=np.full(8, 0.5)),
        dict(good, x_train=np.zeros((0, 64), np.uint8), y_train=y[:0]),
    ]


@pytest.mark.parametrize("arrays", _npz_cases())
def test_npz_validation(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValidationError) as err:
        load_dataset(_save(tmp_path / "bad.npz", **arrays))
    assert err.value.reason is Reason.BAD_DATASET


def test_npz_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        load_dataset(str(tmp_path / "absent.npz"))
    assert err.value.reason is Reason.UNKNOWN_DATASET
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValidationError) as err:
        load_dataset(str(junk))
    assert err.value.reason is Reason.BAD_DATASET
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x_train=np.array([object()]), y_train=np.zeros(1), x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(ValidationError) as err:
        load_dataset(str(pickled))
    assert err.value.reason is Reason.BAD_DATASET


def test_float_features_are_quantized_and_the_scaling_travels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, (40, 3))
    y = rng.integers(0, 3, 40)
    path = _save(tmp_path / "float.npz", x=x, y=y)
    ds = load_dataset(path, test_share=0.25, seed=9)
    assert ds.scaling is not None and ds.n_features == 64 and (ds.n_train, len(ds.x_test)) == (30, 10)
    assert int(ds.x_train.min()) == 0 and int(ds.x_train.max()) == 63  # each feature spans 0..63 on train rows
    assert (ds.x_train[:, 3] == 63).all() and (ds.x_test[:, 3] == 63).all()  # the bias feature: constant 63
    assert not ds.x_train[:, 4:].any() and ds.scaling.get("bias") is True
    assert load_dataset(path, test_share=0.25, seed=9).id == ds.id  # the split is the seed's, reproducibly
    assert load_dataset(path, test_share=0.25, seed=10).id != ds.id
    decoded = Dataset.decode(ds.encode())
    assert decoded.scaling == ds.scaling and decoded.id == ds.id and b"pouw/dataset/2" in ds.encode()[:20]
    wide = _save(tmp_path / "wide.npz", x_train=np.arange(64 * 8).reshape(8, 64), y_train=np.zeros(8, np.int64),
                 x_test=np.arange(64).reshape(1, 64), y_test=np.zeros(1, np.int64))
    wide_ds = load_dataset(wide)
    assert wide_ds.scaling is not None  # integers beyond 0..63 are quantized too
    assert wide_ds.n_features == 128 and (wide_ds.x_train[:, 64] == 63).all()  # 64 features + bias, padded


def test_the_bias_feature_is_optional_and_recorded() -> None:
    from pouw.quantize import apply_scaling, fit_scaling

    x = np.array([[0.0, 2.0], [1.0, 4.0]])
    assert apply_scaling(x, fit_scaling(x)).tolist() == [[0, 0, 63], [63, 63, 63]]
    assert apply_scaling(x, fit_scaling(x, bias=False)).tolist() == [[0, 0], [63, 63]]


def test_scaled_record_must_be_canonical() -> None:
    ds = Dataset("d", np.zeros((2, 64), np.int64), np.zeros(2, np.int64), np.zeros((1, 64), np.int64),
                 np.zeros(1, np.int64), n_classes=2, scaling={"low": [0.0], "high": [1.0]})
    fields = [ "pouw/dataset/2", 2, 64, ds.x_train.tobytes(), ds.y_train.astype("<u2").tobytes(),
               ds.x_test.tobytes(), ds.y_test.astype("<u2").tobytes()]
    assert Dataset.decode(pack([*fields, b'{"high":[1.0],"low":[0.0]}'])).id == ds.id
    biased = Dataset.decode(pack([*fields, b'{"bias":true,"high":[1.0],"low":[0.0]}']))
    assert biased.scaling == {"bias": True, "high": [1.0], "low": [0.0]} and biased.id != ds.id
    for bad in (b'{"bias":false,"high":[1.0],"low":[0.0]}', b'{"high":[1.0],"low":[0.0],"bias":true}',
                b'{"low":[0.0],"high":[1.0]}', b'{"high": [1.0], "low": [0.0]}', b'{"high":[1],"low":[0.0]}',
                b'{"high":[NaN],"low":[0.0]}', b"not json", 5):
        with pytest.raises(InvalidEncoding):
            Dataset.decode(pack([*fields, bad]))
