"""Encrypted key files: round trips, typed failures that write nothing, atomic 0600 creation."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from wallet.address import encode_address
from wallet.keys import InvalidKey, PrivateKey
from wallet.keystore import (
    CorruptKeystore,
    InvalidWalletName,
    KeystoreError,
    KeystoreFile,
    ScryptParams,
    Wallet,
    WalletExists,
    WalletNotFound,
    WrongPassword,
    default_wallet_dir,
    write_new_file,
)

FAST = ScryptParams(n=16, r=8, p=1)
PASSWORD = "correct horse battery staple"


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``directory``: its bytes, mtime and mode."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def wallet(tmp_path: Path) -> Wallet:
    return Wallet(tmp_path / "wallet", kdf=FAST)


def test_round_trip_and_listing(wallet: Wallet) -> None:
    path = wallet.create("alice", PASSWORD)
    imported = PrivateKey.generate()
    wallet.import_key("bob", imported.hex(), "other password")
    alice = wallet.load("alice", PASSWORD)
    assert path == wallet.directory / "alice.json"
    assert wallet.load("bob", "other password") == imported
    assert wallet.list() == [("alice", alice.address), ("bob", imported.address)]
    assert wallet.address("bob") == imported.address
    document = json.loads(path.read_text())
    assert document["version"] == 1
    assert document["address"] == encode_address(alice.address)
    assert (document["kdf"]["n"], document["kdf"]["r"], document["kdf"]["p"]) == (16, 8, 1)
    assert alice.hex() not in path.read_text()


def test_files_are_private_and_never_overwritten(wallet: Wallet) -> None:
    path = wallet.create("alice", PASSWORD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(wallet.directory.stat().st_mode) == 0o700
    before = snapshot(wallet.directory)
    with pytest.raises(WalletExists):
        wallet.create("alice", PASSWORD)
    with pytest.raises(WalletExists):
        write_new_file(path, b"{}")  # even when the existence check is skipped
    assert snapshot(wallet.directory) == before  # no stray temporary file either


def test_same_key_and_password_seal_differently(wallet: Wallet) -> None:
    key = PrivateKey.generate()
    first = KeystoreFile.seal(key, PASSWORD, FAST)
    second = KeystoreFile.seal(key, PASSWORD, FAST)
    assert first.salt != second.salt and first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert KeystoreFile.from_json(first.to_json()) == first
    assert second.open(PASSWORD) == key


def test_wrong_password_writes_nothing(wallet: Wallet) -> None:
    wallet.create("alice", PASSWORD)
    wallet.create("bob", PASSWORD)
    before = snapshot(wallet.directory)
    for attempt in ["", PASSWORD.upper(), PASSWORD + " "]:
        with pytest.raises(WrongPassword, match="alice"):
            wallet.load("alice", attempt)
    assert snapshot(wallet.directory) == before


def test_password_is_unicode_normalised(wallet: Wallet) -> None:
    wallet.create("alice", "caf\u00e9")  # precomposed e-acute
    wallet.load("alice", "cafe\u0301")  # e + combining acute: the same text


@pytest.mark.parametrize("keep", [0, 1, 40, 200, -2])
def test_truncated_file_is_corrupt_and_left_alone(wallet: Wallet, keep: int) -> None:
    path = wallet.create("alice", PASSWORD)
    wallet.create("bob", PASSWORD)
    path.write_bytes(path.read_bytes()[:keep])
    before = snapshot(wallet.directory)
    with pytest.raises(CorruptKeystore, match=r"alice\.json"):
        wallet.load("alice", PASSWORD)
    with pytest.raises(CorruptKeystore):
        wallet.address("alice")
    with pytest.raises(CorruptKeystore):
        wallet.list()
    assert wallet.load("bob", PASSWORD)  # the others still open
    assert snapshot(wallet.directory) == before


def _rewrite(path: Path, edit: dict[str, object], section: str | None = None) -> None:
    document = json.loads(path.read_text())
    (document[section] if section else document).update(edit)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("section", "edit", "message"),
    [
        (None, {"version": 2}, "version"),
        (None, {"version": True}, "version"),
        (None, {"extra": 1}, "fields"),
        (None, {"address": "pw1qqqq"}, "too short"),
        ("kdf", {"name": "pbkdf2"}, "kdf"),
        ("kdf", {"n": 1000}, "power of two"),
        ("kdf", {"n": 1 << 30}, "costly"),  # would need 128 GiB: refused before deriving
        ("kdf", {"p": 0}, "positive"),
        ("kdf", {"r": "8"}, "positive"),
        ("kdf", {"salt": "00"}, "size"),
        ("cipher", {"name": "aes-128-ctr"}, "cipher"),
        ("cipher", {"nonce": "zz" * 12}, "hex"),
        ("cipher", {"tag": "AB" * 16}, "lower-case"),
        ("cipher", {"ciphertext": "00" * 31}, "size"),
    ],
)
def test_bad_fields_are_corrupt(
    wallet: Wallet, section: str | None, edit: dict[str, object], message: str
) -> None:
    path = wallet.create("alice", PASSWORD)
    _rewrite(path, edit, section)
    with pytest.raises(CorruptKeystore, match=message):
        wallet.load("alice", PASSWORD)


def test_swapped_address_is_detected_after_decryption(wallet: Wallet) -> None:
    path = wallet.create("alice", PASSWORD)
    _rewrite(path, {"address": encode_address(bytes(20))})
    assert wallet.address("alice") == bytes(20)  # the clear copy is all listing sees...
    with pytest.raises(CorruptKeystore, match="does not match"):
        wallet.load("alice", PASSWORD)  # ...but opening the key checks it


def test_altered_ciphertext_fails_authentication(wallet: Wallet) -> None:
    path = wallet.create("alice", PASSWORD)
    document = json.loads(path.read_text())
    flipped = bytearray(bytes.fromhex(document["cipher"]["ciphertext"]))
    flipped[0] ^= 1
    _rewrite(path, {"ciphertext": flipped.hex()}, "cipher")
    with pytest.raises(WrongPassword):
        wallet.load("alice", PASSWORD)


def test_names_and_missing_wallets(wallet: Wallet, tmp_path: Path) -> None:
    assert wallet.list() == []
    for bad in ["", "../x", "a/b", ".hidden", "-flag", "x" * 65, "na\u00efve"]:
        with pytest.raises(InvalidWalletName):
            wallet.create(bad, PASSWORD)
    with pytest.raises(WalletNotFound):
        wallet.load("nobody", PASSWORD)
    with pytest.raises(InvalidKey):
        wallet.import_key("bad", "12" * 31, PASSWORD)
    assert not wallet.directory.exists()  # nothing was created by the failures
    assert list(tmp_path.iterdir()) == []


def test_scrypt_params_are_checked() -> None:
    for kwargs in [{"n": 3}, {"n": 0}, {"r": 0}, {"p": 17}, {"n": 1 << 21}]:
        with pytest.raises(KeystoreError):
            ScryptParams(**kwargs)
    assert ScryptParams() == ScryptParams(n=1 << 15, r=8, p=1)


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POUW_WALLET_DIR", str(tmp_path / "elsewhere"))
    assert default_wallet_dir() == tmp_path / "elsewhere"
    assert Wallet().directory == tmp_path / "elsewhere"
    monkeypatch.delenv("POUW_WALLET_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_wallet_dir() == tmp_path / ".pouw" / "wallet"


def test_write_new_file_is_complete_and_private(tmp_path: Path) -> None:
    target = tmp_path / "k.json"
    write_new_file(target, b"payload")
    assert target.read_bytes() == b"payload"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]
