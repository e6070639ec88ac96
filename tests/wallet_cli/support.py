"""Running ``pouw-wallet`` and ``pouw-mine`` as real processes, and checking how they fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.functional.framework import PYTHON, REPO, TIMEOUT_FACTOR
from wallet.address import decode_address, encode_address

PASSWORD = "correct horse"
KDF_ENV = {"POUW_KDF_N": "16"}  # cheap scrypt for tests; real key files use n = 2**15


def run_module(module: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository root, stdin closed, POUW_NODE and the RPC
    credential variables unset."""
    unset = {"POUW_NODE", "POUW_DATADIR", "POUW_RPC_COOKIE", "POUW_RPC_PASSWORD"}
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run([PYTHON, "-m", module, *args], cwd=REPO, env={**base, **KDF_ENV, **(env or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout * TIMEOUT_FACTOR)


class WalletCli:
    """``pouw-wallet`` on one wallet directory, reading passwords from a file, talking to ``node_url``
    (through ``$POUW_NODE``, so the default-from-environment path is the one exercised), authenticated
    with the cookie in the node's ``datadir`` (through ``$POUW_DATADIR``)."""

    def __init__(self, root: Path, node_url: str | None = None, datadir: Path | None = None) -> None:
        self.wallet_dir = root / "wallet"
        self.password_file = root / "password"
        self.password_file.write_text(PASSWORD + "\n")
        self.node_url = node_url
        self.datadir = datadir

    def __call__(self, *args: str, password_file: Path | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {"POUW_NODE": self.node_url} if self.node_url else {}
        if self.datadir is not None:
            env["POUW_DATADIR"] = str(self.datadir)
        return run_module("wallet.cli", "--wallet-dir", str(self.wallet_dir),
                          "--password-file", str(password_file or self.password_file), *args,
                          env=env, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"pouw-wallet {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def new(self, name: str) -> str:
        address = self.ok("new", name).stdout.strip()
        assert encode_address(decode_address(address)) == address
        return address


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, status: int = 1) -> str:
    """Exit ``status`` (2 for a command line that does not parse), nothing on stdout, and exactly one
    ``error: ...`` line on stderr holding ``fragments``."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
