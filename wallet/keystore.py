"""Encrypted key files and the wallet directory that holds them (format: docs/protocol.md Part II).

A keystore file is JSON: the address in clear (so listing needs no password), scrypt parameters and
salt, and the private key sealed with AES-256-GCM under the scrypt-derived key. Files are created
atomically and never overwritten; reading or decrypting never writes anything.

A :class:`Wallet` is a directory of such files, one per name (``<name>.json``). Its default place is
``$POUW_WALLET_DIR`` or else ``~/.pouw/wallet``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES
from Crypto.Protocol.KDF import scrypt

from chain.errors import PouwError
from wallet.address import InvalidAddress, decode_address, encode_address
from wallet.keys import InvalidKey, PrivateKey

KEYSTORE_VERSION = 1
KDF_NAME = "scrypt"
CIPHER_NAME = "aes-256-gcm"
#: Authenticated with the ciphertext, so a key sealed for another format version cannot be opened.
AAD = b"pouw-keystore/v1"
SALT_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
MAX_FILE_BYTES = 64 * 1024
#: Most memory scrypt may take (128 * n * r bytes), so a hostile file cannot ask for more.
MAX_KDF_MEMORY = 1 << 30
WALLET_DIR_ENV = "POUW_WALLET_DIR"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUFFIX = ".json"


class KeystoreError(PouwError):
    """Something is wrong with a key file or the wallet directory."""


class WrongPassword(KeystoreError):
    """The password does not open this key file."""


class CorruptKeystore(KeystoreError):
    """A key file that is truncated, not ours, of an unsupported version, or with bad parameters."""


class WalletNotFound(KeystoreError):
    """No key file of that name."""


class WalletExists(KeystoreError):
    """A key file of that name already exists (it is never overwritten)."""


class InvalidWalletName(KeystoreError):
    """A name that cannot be a key file name."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters; the defaults take about 0.2 s and 32 MiB."""

    n: int = 1 << 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        for field_name in ("n", "r", "p"):
            value = getattr(self, field_name)
            if type(value) is not int or value < 1:
                raise KeystoreError(f"scrypt {field_name} must be a positive integer")
        if self.n < 2 or self.n & (self.n - 1):
            raise KeystoreError(f"scrypt n must be a power of two >= 2, got {self.n}")
        if 128 * self.n * self.r > MAX_KDF_MEMORY or self.p > 16:
            raise KeystoreError(f"scrypt parameters too costly: n={self.n} r={self.r} p={self.p}")

    def derive(self, password: str, salt: bytes) -> bytes:
        secret = unicodedata.normalize("NFC", password).encode("utf-8")
        key: bytes = scrypt(secret, salt, KEY_SIZE, self.n, self.r, self.p)
        return key


@dataclass(frozen=True, slots=True)
class KeystoreFile:
    """The parsed content of one key file (nothing decrypted)."""

    address: bytes
    kdf: ScryptParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    tag: bytes

    @classmethod
    def seal(cls, key: PrivateKey, password: str, kdf: ScryptParams) -> KeystoreFile:
        """Encrypt ``key`` under ``password`` with a fresh salt and nonce."""
        salt = secrets.token_bytes(SALT_SIZE)
        nonce = secrets.token_bytes(NONCE_SIZE)
        cipher = AES.new(kdf.derive(password, salt), AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
        cipher.update(AAD)
        ciphertext, tag = cipher.encrypt_and_digest(key.secret)
        return cls(key.address, kdf, salt, nonce, ciphertext, tag)

    def open(self, password: str) -> PrivateKey:
        """Decrypt the key; :class:`WrongPassword` if the tag does not verify."""
        cipher = AES.new(
            self.kdf.derive(password, self.salt), AES.MODE_GCM, nonce=self.nonce, mac_len=TAG_SIZE
        )
        cipher.update(AAD)
        try:
            secret = cipher.decrypt_and_verify(self.ciphertext, self.tag)
        except ValueError:
            raise WrongPassword("wrong password (or the encrypted key was altered)") from None
        try:
            key = PrivateKey(secret)
        except InvalidKey as exc:
            raise CorruptKeystore(f"decrypted key is invalid: {exc}") from None
        if key.address != self.address:
            raise CorruptKeystore("the address in clear does not match the encrypted key")
        return key

    def to_json(self) -> bytes:
        document = {
            "version": KEYSTORE_VERSION,
            "address": encode_address(self.address),
            "kdf": {
                "name": KDF_NAME,
                "n": self.kdf.n,
                "r": self.kdf.r,
                "p": self.kdf.p,
                "salt": self.salt.hex(),
            },
            "cipher": {
                "name": CIPHER_NAME,
                "nonce": self.nonce.hex(),
                "ciphertext": self.ciphertext.hex(),
                "tag": self.tag.hex(),
            },
        }
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> KeystoreFile:
        """Parse strictly; any deviation from the format is :class:`CorruptKeystore`."""
        if len(data) > MAX_FILE_BYTES:
            raise CorruptKeystore(f"file larger than {MAX_FILE_BYTES} bytes")
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptKeystore(f"not JSON ({exc})") from None
        top = _fields(document, "keystore", {"version", "address", "kdf", "cipher"})
        if type(top["version"]) is not int or top["version"] != KEYSTORE_VERSION:
            raise CorruptKeystore(f"unsupported keystore version {top['version']!r}")
        kdf = _fields(top["kdf"], "kdf", {"name", "n", "r", "p", "salt"})
        cipher = _fields(top["cipher"], "cipher", {"name", "nonce", "ciphertext", "tag"})
        if kdf["name"] != KDF_NAME:
            raise CorruptKeystore(f"unsupported kdf {kdf['name']!r}")
        if cipher["name"] != CIPHER_NAME:
            raise CorruptKeystore(f"unsupported cipher {cipher['name']!r}")
        if not isinstance(top["address"], str):
            raise CorruptKeystore("address is not a string")
        try:
            address = decode_address(top["address"])
            params = ScryptParams(kdf["n"], kdf["r"], kdf["p"])
        except (InvalidAddress, KeystoreError) as exc:
            raise CorruptKeystore(str(exc)) from None
        return cls(
            address=address,
            kdf=params,
            salt=_hex_field(kdf, "salt", 16, 64),
            nonce=_hex_field(cipher, "nonce", NONCE_SIZE, NONCE_SIZE),
            ciphertext=_hex_field(cipher, "ciphertext", KEY_SIZE, KEY_SIZE),
            tag=_hex_field(cipher, "tag", TAG_SIZE, TAG_SIZE),
        )


def _fields(value: Any, what: str, expected: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != expected:
        raise CorruptKeystore(f"{what} must be an object with fields {sorted(expected)}")
    return value


def _hex_field(obj: dict[str, Any], name: str, min_size: int, max_size: int) -> bytes:
    text = obj[name]
    if not isinstance(text, str) or text != text.lower():
        raise CorruptKeystore(f"{name} must be lower-case hex")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise CorruptKeystore(f"{name} is not hex") from None
    if not min_size <= len(raw) <= max_size or len(text) != 2 * len(raw):
        raise CorruptKeystore(f"{name} has the wrong size ({len(raw)} bytes)")
    return raw


def read_keystore(path: Path) -> KeystoreFile:
    """Read and parse one key file (read-only); errors name the file."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise WalletNotFound(f"no key file at {path}") from None
    try:
        return KeystoreFile.from_json(data)
    except CorruptKeystore as exc:
        raise CorruptKeystore(f"corrupt key file {path}: {exc}") from None


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` atomically, mode 0600; never replaces an existing file.

    The bytes go to a temporary file in the same directory, are fsynced, and the file is then
    hard-linked into place: like ``os.replace`` the name appears complete or not at all, but unlike
    it the link fails if another process created the name meanwhile. The directory is fsynced last.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            raise WalletExists(f"{path} already exists; refusing to overwrite it") from None
    finally:
        os.unlink(tmp_name)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_wallet_dir() -> Path:
    """``$POUW_WALLET_DIR`` if set, else ``~/.pouw/wallet``."""
    configured = os.environ.get(WALLET_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".pouw" / "wallet"


class Wallet:
    """A directory of named key files."""

    def __init__(
        self, directory: Path | str | None = None, kdf: ScryptParams | None = None
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_wallet_dir()
        self.kdf = kdf if kdf is not None else ScryptParams()

    def path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise InvalidWalletName(
                f"invalid wallet name {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )
        return self.directory / f"{name}{_SUFFIX}"

    def create(self, name: str, password: str) -> Path:
        """Generate a fresh key and store it under ``name``."""
        return self.save(name, PrivateKey.generate(), password)

    def import_key(self, name: str, secret_hex: str, password: str) -> Path:
        """Store an existing key given as 64 hex digits."""
        return self.save(name, PrivateKey.from_hex(secret_hex), password)

    def free_path(self, name: str) -> Path:
        """The path a new key file ``name`` would take; raises if the name is bad or taken."""
        path = self.path(name)
        if path.exists():
            raise WalletExists(f"a wallet named {name!r} already exists at {path}")
        return path

    def save(self, name: str, key: PrivateKey, password: str) -> Path:
        path = self.free_path(name)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new_file(path, KeystoreFile.seal(key, password, self.kdf).to_json())
        return path

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name[: -len(_SUFFIX)]
            for p in self.directory.glob(f"*{_SUFFIX}")
            if _NAME.fullmatch(p.name[: -len(_SUFFIX)])
        )

    def list(self) -> list[tuple[str, bytes]]:
        """``(name, 20-byte address)`` for every key file, by name; no password needed."""
        return [(name, self.address(name)) for name in self.names()]

    def address(self, name: str) -> bytes:
        return self._read(name).address

    def load(self, name: str, password: str) -> PrivateKey:
        """Decrypt the key stored under ``name``."""
        keystore = self._read(name)
        try:
            return keystore.open(password)
        except WrongPassword:
            raise WrongPassword(f"wrong password for wallet {name!r}") from None
        except CorruptKeystore as exc:
            raise CorruptKeystore(f"corrupt key file {self.path(name)}: {exc}") from None

    def _read(self, name: str) -> KeystoreFile:
        path = self.path(name)
        try:
            return read_keystore(path)
        except WalletNotFound:
            raise WalletNotFound(f"no wallet named {name!r} in {self.directory}") from None
