"""``pouw-wallet``: commands through click's runner, and failures through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.wallet.test_keystore import snapshot
from wallet.address import decode_address
from wallet.cli import main
from wallet.keys import PrivateKey

ENV = {"POUW_KDF_N": "16"}  # cheap scrypt for tests; real files use n = 2**15
PASSWORD = "s3cret"
PROMPTS = ("Password: ", "New password: ", "Repeat for confirmation: ")
REPO = Path(__file__).resolve().parents[2]


def run(wallet_dir: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--wallet-dir", str(wallet_dir), *args], input=stdin, env=ENV)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit status != 0 and, besides password prompts, exactly one ``error:`` line on stderr."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith(PROMPTS)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_new_list_address_export(tmp_path: Path) -> None:
    created = run(tmp_path, "new", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert created.exit_code == 0, created.output
    address = created.stdout.strip()
    assert json.loads((tmp_path / "default.json").read_text())["kdf"]["n"] == 16

    assert run(tmp_path, "address").stdout.strip() == address
    listed = run(tmp_path, "list")
    assert listed.exit_code == 0 and listed.stdout.split() == ["default", address]

    exported = run(tmp_path, "export", stdin=f"{PASSWORD}\n")
    assert exported.exit_code == 0, exported.output
    secret = exported.stdout.strip().splitlines()[-1]
    assert PrivateKey.from_hex(secret).address == decode_address(address)


def test_import_and_export_round_trip(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    wallet_dir = tmp_path / "w"
    opts = ["--password-file", str(password_file)]
    imported = run(wallet_dir, *opts, "import", "carol", "-", stdin=key.hex() + "\n")
    assert imported.exit_code == 0, imported.output
    assert decode_address(imported.stdout.strip()) == key.address
    exported = run(wallet_dir, *opts, "export", "carol")
    assert exported.stdout.strip() == key.hex()


def test_wrong_password_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    run(tmp_path, "new", "alice", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    before = snapshot(tmp_path)
    result = run(tmp_path, "export", "alice", stdin="not it\n")
    assert_one_line_error(result, "wrong password", "alice")
    assert snapshot(tmp_path) == before


def test_failures_are_one_line_errors(tmp_path: Path) -> None:
    run(tmp_path, "new", "alice", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    (tmp_path / "empty").write_text("\n")
    before = snapshot(tmp_path)
    assert_one_line_error(run(tmp_path, "new", "alice"), "already exists")
    assert_one_line_error(run(tmp_path, "address", "bob"), "no wallet named 'bob'")
    assert_one_line_error(run(tmp_path, "export", "bob"), "no wallet named 'bob'")
    assert_one_line_error(run(tmp_path, "import", "bob", "xyz"), "64 hex digits")
    assert_one_line_error(run(tmp_path, "import", "bob", "zz" * 32), "not valid hex")
    assert_one_line_error(run(tmp_path, "address", "../alice"), "invalid wallet name")
    empty = run(tmp_path, "--password-file", str(tmp_path / "empty"), "new", "carol")
    assert_one_line_error(empty, "empty password")
    missing = run(tmp_path, "--password-file", str(tmp_path / "nope"), "export", "alice")
    assert_one_line_error(missing, "nope")
    bad_n = CliRunner().invoke(
        main, ["--wallet-dir", str(tmp_path), "new", "dave"], env={"POUW_KDF_N": "1000"}
    )
    assert_one_line_error(bad_n, "power of two")
    assert snapshot(tmp_path) == before


def test_truncated_key_file(tmp_path: Path) -> None:
    for name in ("alice", "bob"):
        run(tmp_path, "new", name, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    alice = tmp_path / "alice.json"
    alice.write_bytes(alice.read_bytes()[:57])
    before = snapshot(tmp_path)
    assert_one_line_error(run(tmp_path, "export", "alice", stdin=f"{PASSWORD}\n"), "corrupt")
    assert_one_line_error(run(tmp_path, "address", "alice"), "corrupt", "alice.json")
    listed = run(tmp_path, "list")
    assert_one_line_error(listed, "alice.json")
    assert listed.stdout.split()[0] == "bob"  # the healthy key is still listed
    assert snapshot(tmp_path) == before


def test_wallet_dir_from_environment(tmp_path: Path) -> None:
    env = {**ENV, "POUW_WALLET_DIR": str(tmp_path / "envdir")}
    result = CliRunner().invoke(main, ["new"], input=f"{PASSWORD}\n{PASSWORD}\n", env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envdir" / "default.json").exists()


def _wallet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wallet.cli", "--wallet-dir", str(tmp_path / "w"), *args],
        cwd=REPO,
        env={**os.environ, **ENV},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_real_process_reports_errors_without_traceback(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(PASSWORD + "\n")
    bad.write_text("wrong\n")
    created = _wallet(tmp_path, "--password-file", str(good), "new")
    assert created.returncode == 0, created.stderr
    before = snapshot(tmp_path / "w")

    wrong = _wallet(tmp_path, "--password-file", str(bad), "export")
    assert wrong.returncode != 0 and wrong.stdout == ""
    assert wrong.stderr.splitlines() == ["error: wrong password for wallet 'default'"]
    assert snapshot(tmp_path / "w") == before

    key_file = tmp_path / "w" / "default.json"
    key_file.write_bytes(key_file.read_bytes()[:100])
    truncated = _wallet(tmp_path, "--password-file", str(good), "export")
    assert truncated.returncode != 0 and "Traceback" not in truncated.stderr
    lines = truncated.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: corrupt key file")
