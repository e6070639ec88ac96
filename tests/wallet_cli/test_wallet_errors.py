"""``pouw-wallet`` failures: one ``error: ...`` line, exit status 1, no traceback, nothing written, and
(for mistakes the wallet can see itself) no node contacted and no password asked for."""

from __future__ import annotations

from pathlib import Path

from tests.functional.conftest import Network
from tests.functional.framework import free_port
from tests.wallet.test_keystore import snapshot
from tests.wallet_cli.support import WalletCli, assert_one_line_error

UNKNOWN_JOB = "ab" * 32


def one_char_changed(address: str) -> str:
    """``address`` with one data character replaced: a typo the bech32m checksum must catch."""
    i = len(address) // 2
    return address[:i] + ("q" if address[i] != "q" else "p") + address[i + 1 :]


def test_local_mistakes_and_an_unreachable_node(tmp_path: Path) -> None:
    cli = WalletCli(tmp_path)
    cli.new("alice")
    bob = cli.new("bob")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = snapshot(cli.wallet_dir)

    assert_one_line_error(cli("balance", "alice", "--node", dead), f"cannot reach node at {dead}")
    assert_one_line_error(cli("history", bob, "--node", dead), f"cannot reach node at {dead}")
    assert_one_line_error(cli("send", bob, "1", "--from", "alice", "--node", dead), f"cannot reach node at {dead}")
    assert_one_line_error(cli("job", "status", UNKNOWN_JOB, "--node", dead), f"cannot reach node at {dead}")
    assert_one_line_error(cli("balance", "alice", "--node", "localhost:8645"), "bad node URL")

    # Everything below fails on its input, before the (dead) node is asked anything.
    typo = one_char_changed(bob)
    assert_one_line_error(cli("send", typo, "1", "--from", "alice", "--node", dead), f"bad address {typo!r}", "checksum")
    assert_one_line_error(cli("balance", typo, "--node", dead), "checksum")
    for amount in ("1.123456789", "1e3", "one", ""):
        assert_one_line_error(cli("send", bob, amount, "--from", "alice", "--node", dead), "bad AMOUNT")
    assert_one_line_error(cli("send", "--from", "alice", "--node", dead, "--", bob, "-1"), "bad AMOUNT")
    assert_one_line_error(cli("send", bob, "-1", "--node", dead), "No such option '-1'", "send --help", status=2)
    assert_one_line_error(cli("send", bob, "--node", dead), "Missing argument 'AMOUNT'", status=2)
    assert_one_line_error(cli("send", bob, "0", "--from", "alice", "--node", dead), "more than zero")
    assert_one_line_error(cli("send", bob, "1", "--fee", "0.1.2", "--from", "alice", "--node", dead), "bad --fee")
    assert_one_line_error(cli("send", bob, "1", "--memo", "x" * 257, "--from", "alice", "--node", dead), "--memo")
    assert_one_line_error(cli("send", bob, "1", "--from", "nobody", "--node", dead), "no wallet named 'nobody'")
    missing = tmp_path / "no-such-password-file"
    assert_one_line_error(cli("send", bob, "1", "--from", "alice", "--node", dead, password_file=missing), dead)

    submit = ("job", "submit", "--steps", "10", "--fee-per-step", "0.00000001", "--from", "alice", "--node", dead)
    assert_one_line_error(cli(*submit, "--dims", "64;128", "--dataset", "digits"), "bad --dims")
    assert_one_line_error(cli(*submit, "--dims", "64", "--dataset", "digits"), "bad --dims")
    assert_one_line_error(cli(*submit, "--dims", "64,64", "--dataset", str(tmp_path / "absent.npz")), "no such file")
    assert_one_line_error(cli(*submit, "--dims", "64,64", "--dataset", "mnist"), "bad --dataset")
    not_npz = tmp_path / "garbage.npz"
    not_npz.write_bytes(b"not a zip archive")
    assert_one_line_error(cli(*submit, "--dims", "64,64", "--dataset", str(not_npz)), "garbage.npz")
    for command in ("status", "download", "cancel"):
        assert_one_line_error(cli("job", command, "xyz", "--node", dead), "bad job id 'xyz'")
    assert snapshot(cli.wallet_dir) == before


def test_rejections_by_a_node(network: Network, tmp_path: Path) -> None:
    node = network.add_node()
    cli = WalletCli(tmp_path, node.url, node.datadir)
    cli.new("alice")  # holds nothing
    bob = cli.new("bob")
    before = snapshot(cli.wallet_dir)

    assert_one_line_error(cli("send", bob, "1", "--from", "alice"), "node rejected the transaction: insufficient-balance")
    escrow_too_big = ("job", "submit", "--dims", "64,64,64", "--dataset", "digits", "--steps", "10",
                      "--fee-per-step", "1", "--from", "alice")
    assert_one_line_error(cli(*escrow_too_big), "insufficient-balance")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    assert_one_line_error(cli("send", bob, "1", "--from", "alice", password_file=wrong), "wrong password for wallet 'alice'")
    assert_one_line_error(cli("send", bob, "1", "--fee", "0.00000001", "--from", "alice"), "below this transaction's floor")

    submit = ("job", "submit", "--dataset", "digits", "--steps", "10", "--fee-per-step", "0.00000001", "--from", "alice")
    assert_one_line_error(cli(*submit, "--dims", "64,100"), "bad-job-spec", "width 100")
    assert_one_line_error(cli(*submit, "--dims", "128,64"), "bad-job-spec", "do not fit")  # digits has 64 features

    out = tmp_path / "model.safetensors"
    assert_one_line_error(cli("job", "status", UNKNOWN_JOB), f"unknown job {UNKNOWN_JOB}")
    assert_one_line_error(cli("job", "wait", UNKNOWN_JOB), f"unknown job {UNKNOWN_JOB}")
    assert_one_line_error(cli("job", "predict", UNKNOWN_JOB, "--input", str(out)), "No such file")
    assert_one_line_error(cli("job", "download", UNKNOWN_JOB, "--out", str(out)), f"unknown job {UNKNOWN_JOB}")
    assert_one_line_error(cli("job", "cancel", UNKNOWN_JOB, "--from", "alice"), f"unknown job {UNKNOWN_JOB}")
    builtin = node.get("/api/jobs")["jobs"][0]
    assert_one_line_error(cli("job", "cancel", builtin["job_id"], "--from", "alice"), f"belongs to {builtin['owner']}")
    assert_one_line_error(cli("job", "download", builtin["job_id"], "--out", str(tmp_path / "no" / "dir.safetensors")),
                          "No such file or directory")

    assert not out.exists()
    assert snapshot(cli.wallet_dir) == before
    assert node.get("/api/mempool")["count"] == 0
