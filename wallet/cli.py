"""``pouw-wallet``: the command line over the key store (``new``, ``list``, ``address``, ``export``,
``import``) and over a node's HTTP API (``balance``, ``send``, ``history``, ``job submit|status|list|
wait|download|predict|cancel``, ``dataset publish``). ``--json`` on every command that prints data
gives one JSON document on stdout instead; ``--version`` prints the version.

Every command receives a :class:`CliContext` (``ctx.obj``) that holds the global options and knows
how to open the wallet and obtain a password; commands that talk to a node take ``--node URL``
(default ``$POUW_NODE``, else http://127.0.0.1:8645) and reach it through
:class:`wallet.client.NodeClient`. Any :class:`PouwError` or ``OSError`` escaping a command becomes
one ``error: ...`` line on stderr and exit status 1.

Commands that sign check everything local first (address checksum, amount, dims, dataset file),
then ask the node for the account's next nonce and the chain's fee rule, and only then ask for the
password, so a mistake never costs the user a password prompt. Results go to stdout (a txid, a job
id, a balance); progress goes to stderr.

``POUW_KDF_N`` (for tests and slow machines only) sets the scrypt ``n`` used for new key files.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from chain.errors import PouwError
from chain.types import (
    MAX_DATASET_BYTES,
    MAX_MEMO_BYTES,
    MAX_NAME_BYTES,
    DatasetChunk,
    DatasetPublish,
    JobCancel,
    JobSpec,
    JobSubmit,
    Transfer,
    TxBody,
    dataset_id_of,
    job_id_of,
)
from wallet.address import InvalidAddress, decode_address, encode_address
from wallet.amounts import InvalidAmount, format_amount, parse_amount
from wallet.client import DEFAULT_NODE_URL, NODE_URL_ENV, Json, NodeClient, NodeError
from wallet.fees import floor_fee, signed_size
from wallet.jobs import check_job, label, load_job_dataset, parse_dims
from wallet.keys import PrivateKey
from wallet.keystore import CorruptKeystore, ScryptParams, Wallet
from wallet.txbuild import sign_tx

if TYPE_CHECKING:
    from consensus.presets import Preset
    from pouw.datasets import Dataset
    from pouw.modelfile import ModelFile

DEFAULT_NAME = "default"
KDF_N_ENV = "POUW_KDF_N"
F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A failure reported as a single ``error: ...`` line."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr)


class CliUsageError(CliError):
    """A command line click cannot parse: still one line, with click's exit status for usage errors."""

    exit_code = 2


def _one_line_usage(exc: click.UsageError) -> click.UsageError | CliUsageError:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # a bare group: its help is the answer
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return CliUsageError(exc.format_message().rstrip(".") + where)


class WalletGroup(click.Group):
    """A group whose commands report the project's errors, and bad usage, as one ``error:`` line."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None
        except PouwError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise CliError(f"{exc.strerror or exc}{where}") from None


@dataclass(frozen=True)
class CliContext:
    """Global options, shared by every command."""

    wallet_dir: Path | None
    password_file: Path | None

    def wallet(self) -> Wallet:
        return Wallet(self.wallet_dir, kdf=_kdf_from_env())

    def password(self, *, new: bool) -> str:
        """From ``--password-file`` (its first line) or a hidden prompt, confirmed when ``new``."""
        if self.password_file is not None:
            try:
                lines = self.password_file.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise CliError(f"{self.password_file} is not UTF-8 text") from None
            password = lines[0] if lines else ""
        else:
            password = click.prompt(
                "New password" if new else "Password",
                hide_input=True,
                confirmation_prompt=new,
                err=True,  # keep stdout for the result
            )
        if new and not password:
            raise CliError("refusing an empty password")
        return password


def _kdf_from_env() -> ScryptParams:
    text = os.environ.get(KDF_N_ENV)
    if not text:
        return ScryptParams()
    try:
        return ScryptParams(n=int(text))
    except ValueError:
        raise CliError(f"{KDF_N_ENV} must be an integer, got {text!r}") from None


pass_cli = click.make_pass_decorator(CliContext)
name_argument = click.argument("name", default=DEFAULT_NAME)


def json_option(f: F) -> F:
    """``--json``: print the command's data as one JSON document on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group(cls=WalletGroup)
@click.version_option(package_name="pouw-chain", prog_name="pouw-wallet", message="%(prog)s %(version)s")
@click.option(
    "--wallet-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of key files [default: $POUW_WALLET_DIR or ~/.pouw/wallet].",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the password from the first line of this file instead of prompting.",
)
@click.pass_context
def main(ctx: click.Context, wallet_dir: Path | None, password_file: Path | None) -> None:
    """Keys, balances, transfers and training jobs on the PoUW chain."""
    ctx.obj = CliContext(wallet_dir=wallet_dir, password_file=password_file)


@main.command()
@name_argument
@pass_cli
def new(cli: CliContext, name: str) -> None:
    """Create a key NAME (default: "default") and print its address."""
    wallet = cli.wallet()
    wallet.free_path(name)  # fail before asking for a password
    path = wallet.create(name, cli.password(new=True))
    click.echo(encode_address(wallet.address(name)))
    click.echo(f"saved {path}", err=True)


@main.command("import")
@click.argument("name")
@click.argument("secret_hex", metavar="HEX")
@pass_cli
def import_(cli: CliContext, name: str, secret_hex: str) -> None:
    """Store an existing private key HEX (64 hex digits; "-" reads it from stdin) as NAME."""
    wallet = cli.wallet()
    wallet.free_path(name)
    if secret_hex == "-":
        secret_hex = sys.stdin.readline()
    key = PrivateKey.from_hex(secret_hex)
    path = wallet.save(name, key, cli.password(new=True))
    click.echo(encode_address(key.address))
    click.echo(f"saved {path}", err=True)


@main.command("list")
@json_option
@pass_cli
def list_(cli: CliContext, as_json: bool) -> None:
    """Print every key's name and address (no password needed).

    A corrupt key file gets an ``error:`` line of its own; the others are still listed.
    """
    wallet = cli.wallet()
    names = wallet.names()
    if not names:
        click.echo(f"no keys in {wallet.directory}", err=True)
    width = max(map(len, names), default=0)
    failed = False
    rows = []
    for name in names:
        try:
            shown = encode_address(wallet.address(name))
        except CorruptKeystore as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
        else:
            rows.append({"name": name, "address": shown})
            if not as_json:
                click.echo(f"{name:<{width}}  {shown}")
    if as_json:
        _print_json({"keys": rows})
    if failed:
        sys.exit(1)


@main.command()
@name_argument
@json_option
@pass_cli
def address(cli: CliContext, name: str, as_json: bool) -> None:
    """Print the address of key NAME (no password needed)."""
    shown = encode_address(cli.wallet().address(name))
    if as_json:
        _print_json({"name": name, "address": shown})
    else:
        click.echo(shown)


@main.command()
@name_argument
@pass_cli
def export(cli: CliContext, name: str) -> None:
    """Decrypt key NAME and print its private key as hex. Anyone who sees it owns the funds."""
    wallet = cli.wallet()
    wallet.address(name)  # a missing or corrupt file fails before the prompt
    click.echo(wallet.load(name, cli.password(new=False)).hex())


# ---------------------------------------------------------------------------------------------
# Talking to a node

DEFAULT_WAIT_SECONDS = 300.0
HISTORY_LIMIT = 20
U32_MAX = (1 << 32) - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Node:
    """A node, and the rules of the chain it follows (the preset it reports): nonces, fees, datasets."""

    client: NodeClient
    preset: Preset

    @classmethod
    def connect(cls, url: str) -> Node:
        from consensus.presets import get_preset

        client = NodeClient(url)
        status = client.status()
        try:
            preset = get_preset(str(status.get("preset")))
        except ValueError:
            raise NodeError(f"node at {client.url} follows preset {status.get('preset')!r}, unknown here") from None
        if status.get("chain_id") != preset.chain_id:
            raise NodeError(f"node at {client.url} reports chain id {status.get('chain_id')}, "
                            f"but {preset.name} is {preset.chain_id}")
        return cls(client, preset)

    @property
    def chain_id(self) -> int:
        return self.preset.chain_id

    def next_nonce(self, address: bytes) -> int:
        """The nonce after the account's last transaction, pending ones included."""
        return int(self.client.account(encode_address(address))["next_nonce"])

    def priced(self, make_body: Callable[[int], TxBody], fee: int | None = None) -> TxBody:
        """``make_body(fee)``, or ``make_body`` at the chain's floor fee when ``fee`` is None."""
        required = self.preset.chain_rules.required_fee
        if fee is None:
            return make_body(floor_fee(make_body, required))
        body = make_body(fee)
        floor = required(signed_size(body))
        if fee < floor:
            raise CliError(f"--fee {format_amount(fee)} is below this transaction's floor {format_amount(floor)}")
        return body

    def has_dataset(self, dataset: Dataset, dataset_id: bytes | None = None) -> bool:
        """Whether every validator already has ``dataset`` (published as ``dataset_id``, by default
        its own id): built into the preset, or published."""
        # Only load_dataset("digits") names a dataset "digits" (a .npz is named by its file), so a
        # .npz never pays for building the built-in dataset just to compare ids.
        builtin = dataset.name == "digits" and dataset.id == self.preset.builtin_dataset().id
        return builtin or self.client.dataset_published(dataset.id if dataset_id is None else dataset_id)


PENDING_PART_BYTES = 12 * 1024 * 1024
"""Dataset-part bytes the wallet leaves pending at once: it waits for them to be mined before sending
more, so a large dataset never overflows a node's mempool (16 MiB by default)."""


def _sign_and_submit(cli: CliContext, node: Node, name: str, bodies: Sequence[TxBody],
                     timeout: float = 600.0) -> list[str]:
    """Unlock key ``name`` (one password prompt), then sign and submit ``bodies`` in order; after
    :data:`PENDING_PART_BYTES` of dataset parts, wait (up to ``timeout`` each time) for them to be mined."""
    key = cli.wallet().load(name, cli.password(new=False))
    txids: list[str] = []
    parts = sum(isinstance(body, DatasetChunk) for body in bodies)
    pending = sent = 0
    for body in bodies:
        if isinstance(body, DatasetChunk):
            if pending and pending + len(body.data) > PENDING_PART_BYTES:
                click.echo(f"waiting for parts 1..{sent} of {parts} to be mined...", err=True)
                node.client.wait_for_tx(txids[-1], timeout)
                pending = 0
            pending += len(body.data)
            sent += 1
        txids.append(node.client.submit_tx(sign_tx(key, body)))
        what = f"part {sent}/{parts} " if isinstance(body, DatasetChunk) else ""
        click.echo(f"submitted {type(body).__name__} {what}{txids[-1]} (nonce {body.nonce}, "
                   f"fee {format_amount(body.fee)})", err=True)
    return txids


def _wait(node: Node, txid: str, timeout: float) -> Json:
    click.echo(f"waiting for {txid} to be mined...", err=True)
    view = node.client.wait_for_tx(txid, timeout)
    click.echo(f"confirmed at height {view['height']} (block {view['block_hash']})")
    return view


def _address(text: str, what: str = "address") -> bytes:
    try:
        return decode_address(text)
    except InvalidAddress as exc:
        raise CliError(f"bad {what} {text!r}: {exc}") from None


def _amount(text: str, what: str) -> int:
    try:
        return parse_amount(text)
    except InvalidAmount as exc:
        raise CliError(f"bad {what}: {exc}") from None


def _job_id(text: str) -> str:
    job_id = text.strip().lower()
    if not _HEX64.fullmatch(job_id):
        raise CliError(f"bad job id {text!r}: expected 64 hex digits")
    return job_id


def _fetch_job(client: NodeClient, job_id: str) -> Json:
    view = client.job(job_id)
    if view is None:
        raise CliError(f"unknown job {job_id} (not on the node's chain)")
    return view


def _account_address(cli: CliContext, name_or_address: str) -> str:
    """The address of wallet NAME; text that starts like an address (and names no key file) is one."""
    wallet = cli.wallet()
    if name_or_address.lower().startswith("pw1") and not wallet.path(name_or_address).exists():
        return encode_address(_address(name_or_address))
    return encode_address(wallet.address(name_or_address))


def node_option(f: F) -> F:
    return click.option(
        "--node", "node_url", envvar=NODE_URL_ENV, default=DEFAULT_NODE_URL, show_default=True, metavar="URL",
        help=f"The node's HTTP API [env {NODE_URL_ENV}].",
    )(f)


def signer_option(f: F) -> F:
    return click.option("--from", "name", default=DEFAULT_NAME, show_default=True, metavar="NAME",
                        help="The wallet (key name) that signs and pays.")(f)


def wait_options(f: F) -> F:
    f = click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_WAIT_SECONDS, show_default=True,
                     metavar="S", help="With --wait: give up after S seconds.")(f)
    return click.option("--wait", is_flag=True, help="Wait until the transaction is mined; print its height.")(f)


account_argument = click.argument("account", default=DEFAULT_NAME, metavar="[NAME|ADDRESS]")


# ---------------------------------------------------------------------------------------------
# Accounts


@main.command()
@account_argument
@node_option
@json_option
@pass_cli
def balance(cli: CliContext, account: str, node_url: str, as_json: bool) -> None:
    """Balance, nonce and pending transactions of wallet NAME (default "default") or of any ADDRESS."""
    address = _account_address(cli, account)
    view = NodeClient(node_url).account(address)
    pending = view["pending"]
    if as_json:
        _print_json({"address": address, "balance": int(view["balance"]),
                     "balance_coins": format_amount(int(view["balance"])), "nonce": view["nonce"],
                     "pending": pending})
        return
    click.echo(f"address  {address}")
    click.echo(f"balance  {format_amount(int(view['balance']))}")
    click.echo(f"nonce    {view['nonce']}")
    click.echo(f"pending  {len(pending)}")
    for tx in pending:
        click.echo(_history_row(tx, address))


@main.command()
@account_argument
@click.option("--limit", type=click.IntRange(1, 200), default=HISTORY_LIMIT, show_default=True,
              help="Show the newest N confirmed transactions.")
@node_option
@json_option
@pass_cli
def history(cli: CliContext, account: str, limit: int, node_url: str, as_json: bool) -> None:
    """Transactions from or to wallet NAME (or any ADDRESS), pending first, then newest first.

    Block rewards are no transactions and do not appear; the node answers from its address index.
    """
    address = _account_address(cli, account)
    view = NodeClient(node_url).account(address, history=limit)
    txs = [*view["pending"], *view["history"]]
    if as_json:
        _print_json({"address": address, "transactions": txs})
        return
    if not txs:
        click.echo(f"no transactions for {address} in the node's recent blocks", err=True)
        return
    click.echo(_columns("HEIGHT", "TIME (UTC)", "KIND", "AMOUNT", "FEE", "TXID", "DETAIL").rstrip())
    for tx in txs:
        click.echo(_history_row(tx, address))


def _columns(height: str, when: str, kind: str, amount: str, fee: str, txid: str, detail: str) -> str:
    return f"{height:>8}  {when:<19}  {kind:<15}  {amount:>20}  {fee:>12}  {txid:<64}  {detail}"


def _history_row(tx: Json, me: str) -> str:
    """One line for a transaction view of the API, amounts signed as ``me`` sees them."""
    when = "-"
    if "timestamp" in tx:
        when = datetime.fromtimestamp(int(tx["timestamp"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
    outgoing = tx["from"] == me
    kind, amount, detail = _effect(tx, outgoing)
    fee = format_amount(int(tx["fee"])) if outgoing else ""
    return _columns(str(tx.get("height", "pending")), when, kind, amount, fee, str(tx["txid"]), detail)


def _effect(tx: Json, outgoing: bool) -> tuple[str, str, str]:
    """(kind, signed amount, what it did) of a transaction view."""
    kind = str(tx["kind"])
    if kind == "transfer":
        amount = format_amount(int(tx["amount"]))
        if outgoing and tx["to"] == tx["from"]:
            return kind, amount, "to self"
        if outgoing:
            return kind, f"-{amount}", f"to {tx['to']}"
        return kind, f"+{amount}", f"from {tx['from']}"
    if kind == "job_submit":
        spec = tx["spec"]
        escrow = format_amount(spec["total_steps"] * spec["fee_per_step"])
        return "job submit", f"-{escrow}", f"job {job_id_of(bytes.fromhex(tx['txid'])).hex()} {tx['name']!r}"
    if kind == "job_cancel":
        return "job cancel", "", f"job {tx['job_id']}"
    if kind == "dataset_publish":
        return "dataset publish", "", f"dataset {tx['dataset_id']} ({tx['size']} bytes)"
    if kind == "dataset_chunk":
        return "dataset part", "", f"part {tx['part_id']} ({tx['size']} bytes)"
    return kind, "", ""


@main.command()
@click.argument("to", metavar="TO")
@click.argument("amount", metavar="AMOUNT")
@click.option("--fee", metavar="COINS", help="Fee in coins [default: the least the chain takes for this tx].")
@click.option("--memo", default="", help=f"A public note for the recipient (at most {MAX_MEMO_BYTES} bytes).")
@signer_option
@wait_options
@node_option
@json_option
@pass_cli
def send(cli: CliContext, to: str, amount: str, fee: str | None, memo: str, name: str, wait: bool, timeout: float,
         node_url: str, as_json: bool) -> None:
    """Send AMOUNT coins to address TO and print the txid. AMOUNT has at most 8 decimals, like 1.5."""
    recipient = _address(to)
    units = _amount(amount, "AMOUNT")
    if units == 0:
        raise CliError("AMOUNT must be more than zero")
    fee_units = None if fee is None else _amount(fee, "--fee")
    memo_bytes = memo.encode()
    if len(memo_bytes) > MAX_MEMO_BYTES:
        raise CliError(f"--memo is {len(memo_bytes)} bytes; at most {MAX_MEMO_BYTES}")
    sender = cli.wallet().address(name)
    node = Node.connect(node_url)
    nonce = node.next_nonce(sender)
    body = node.priced(
        lambda f: Transfer(chain_id=node.chain_id, nonce=nonce, fee=f, to=recipient, amount=units, memo=memo_bytes),
        fee_units,
    )
    [txid] = _sign_and_submit(cli, node, name, [body])
    _report_tx(node, txid, wait, timeout, as_json)


def _report_tx(node: Node, txid: str, wait: bool, timeout: float, as_json: bool, **extra: Any) -> None:
    """Print ``txid`` (text) or ``{"txid", ...}`` (JSON); with ``wait``, after it confirms."""
    if not as_json:
        click.echo(txid)
        if wait:
            _wait(node, txid, timeout)
        return
    out: Json = {"txid": txid, **extra, "status": "pending"}
    if wait:
        click.echo(f"waiting for {txid} to be mined...", err=True)
        view = node.client.wait_for_tx(txid, timeout)
        out.update(status="confirmed", height=view["height"], block_hash=view["block_hash"])
    _print_json(out)


# ---------------------------------------------------------------------------------------------
# Jobs


def part_bytes_option(f: F) -> F:
    """``--part-bytes``: the data per dataset part (the protocol's 4 MiB unless testing)."""
    return click.option("--part-bytes", type=click.IntRange(4096, MAX_DATASET_BYTES), default=MAX_DATASET_BYTES,
                        show_default=True, metavar="N", hidden=True,
                        help="Bytes of data per transaction of a dataset published in parts.")(f)


def dataset_split_options(f: F) -> F:
    f = click.option("--seed", type=click.IntRange(0, U32_MAX), default=0, show_default=True,
                     help="Seed of the held-out split drawn for files without a test split.")(f)
    return click.option("--test-share", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True,
                        metavar="F", help="Share of rows held out when the file has no test split.")(f)


PUBLIC_DATA_WARNING = ("warning: a published dataset is PUBLIC: every node stores it for good and serves it to "
                       "anyone, and miners see every row. Do not publish data you may not share.")


@main.group()
def job() -> None:
    """Buy training: submit a job, watch it, download its model, cancel it."""


@job.command("submit")
@click.option("--dims", "dims_text", required=True, metavar="W0,W1,...",
              help="Layer widths, input first: multiples of 64, e.g. 64,128,64.")
@click.option("--dataset", "dataset_source", required=True, metavar="digits|PATH.npz|PATH.csv",
              help="The built-in digits, or a .npz/.csv to publish first (float features are quantized).")
@click.option("--steps", type=click.IntRange(1, U32_MAX), required=True, metavar="N", help="Training steps to buy.")
@click.option("--fee-per-step", "fee_text", required=True, metavar="COINS", help="What each step pays its miner.")
@click.option("--batch", type=click.IntRange(1, 0xFFFF), default=64, show_default=True, metavar="ROWS",
              help="Rows per step (a multiple of 64).")
@click.option("--lr-shift", type=click.IntRange(0, 0xFF), default=8, show_default=True, metavar="N",
              help="Learning rate 2^-N.")
@click.option("--name", "job_name", help="A public label [default: the dataset's name].")
@dataset_split_options
@part_bytes_option
@signer_option
@wait_options
@node_option
@json_option
@pass_cli
def job_submit(cli: CliContext, dims_text: str, dataset_source: str, steps: int, fee_text: str, batch: int,
               lr_shift: int, job_name: str | None, test_share: float, seed: int, name: str, wait: bool,
               timeout: float, node_url: str, as_json: bool, part_bytes: int) -> None:
    """Escrow STEPS x FEE-PER-STEP coins for training a model; prints the job id.

    A .npz or .csv dataset that is not on chain yet is published first, in a transaction of its
    own. Training data becomes PUBLIC: every node stores and serves it.
    """
    dims = parse_dims(dims_text)
    fee_per_step = _amount(fee_text, "--fee-per-step")
    if job_name is not None and len(job_name.encode()) > MAX_NAME_BYTES:
        raise CliError(f"--name is longer than {MAX_NAME_BYTES} bytes")
    dataset = load_job_dataset(dataset_source, test_share=test_share, seed=seed)
    sender = cli.wallet().address(name)
    node = Node.connect(node_url)
    dataset_id, _ = _publish_bodies(node, dataset, 0, part_bytes)
    spec = JobSpec(dims=dims, dataset_id=dataset_id, batch_size=batch, lr_shift=lr_shift, total_steps=steps,
                   fee_per_step=fee_per_step)
    check_job(node.preset, spec, dataset)
    nonce = node.next_nonce(sender)
    bodies: list[TxBody] = []
    if not node.has_dataset(dataset, dataset_id):
        bodies.extend(_publish_bodies(node, dataset, nonce, part_bytes, announce=True)[1])
    submit = node.priced(lambda f: JobSubmit(
        chain_id=node.chain_id, nonce=nonce + len(bodies), fee=f, spec=spec, name=label(job_name or dataset.name)))
    bodies.append(submit)
    txids = _sign_and_submit(cli, node, name, bodies, timeout)
    click.echo(f"escrow {format_amount(spec.escrow)} for {steps} steps at {format_amount(fee_per_step)}", err=True)
    job_id = job_id_of(bytes.fromhex(txids[-1])).hex()
    if as_json:
        _report_tx(node, txids[-1], wait, timeout, True, job_id=job_id, dataset_id=dataset_id.hex())
        return
    click.echo(job_id)
    if wait:
        _wait(node, txids[-1], timeout)


def _publish_bodies(node: Node, dataset: Dataset, nonce: int, part_bytes: int = MAX_DATASET_BYTES,
                    announce: bool = False) -> tuple[bytes, list[TxBody]]:
    """(the id ``dataset`` has on chain, the transactions that publish it from ``nonce`` on): one
    ``DatasetPublish`` when it fits ``part_bytes``, else a ``DatasetChunk`` per part not on chain
    yet (so an interrupted publish resumes) and the manifest (docs/protocol.md Part I §4)."""
    from pouw.datasets import split_parts

    try:
        split = split_parts(dataset, part_bytes)
    except PouwError as exc:
        raise CliError(str(exc)) from None
    if split is None:
        data = dataset.encode()
        pieces: list[bytes] = []
    else:
        data = split[0].encode()
        pieces = split[1]
    dataset_id = dataset_id_of(data)
    if not announce:
        return dataset_id, []
    click.echo(PUBLIC_DATA_WARNING, err=True)
    bodies: list[TxBody] = []
    for piece in pieces:
        if not node.client.dataset_published(dataset_id_of(piece)):
            bodies.append(node.priced(lambda f, piece=piece: DatasetChunk(  # type: ignore[misc]
                chain_id=node.chain_id, nonce=nonce + len(bodies), fee=f, data=piece)))
    total = sum(map(len, pieces)) or len(data)
    click.echo(f"publishing dataset {dataset_id.hex()} ({total} bytes"
               + (f" in {len(pieces)} parts, {len(bodies)} not on chain yet)" if pieces else ")"), err=True)
    bodies.append(node.priced(lambda f: DatasetPublish(
        chain_id=node.chain_id, nonce=nonce + len(bodies), fee=f, name=label(dataset.name), data=data)))
    return dataset_id, bodies


PENDING_SCAN = 500


def _job_view(client: NodeClient, job_id: str) -> Json | None:
    """The node's view of job ``job_id``; a submit still in the mempool shows as ``pending``."""
    view = client.job(job_id)
    if view is not None:
        return view
    for tx in client.get_json("/api/mempool").get("txs", [])[:PENDING_SCAN]:
        if tx.get("kind") == "job_submit" and job_id_of(bytes.fromhex(tx["txid"])).hex() == job_id:
            return _pending_view(tx)
    return None


def _pending_view(tx: Json) -> Json:
    spec = tx["spec"]
    return {
        "job_id": job_id_of(bytes.fromhex(tx["txid"])).hex(), "name": tx["name"], "owner": tx["from"],
        "status": "pending", "spec": spec, "steps_done": 0, "steps_left": spec["total_steps"],
        "escrow_left": spec["total_steps"] * spec["fee_per_step"], "escrow_spent": 0, "txid": tx["txid"],
        "history": [],
    }


def _fetch_view(client: NodeClient, job_id: str) -> Json:
    view = _job_view(client, job_id)
    if view is None:
        raise CliError(f"unknown job {job_id} (neither on the node's chain nor in its mempool)")
    return view


@job.command("status")
@click.argument("job_id_text", metavar="ID")
@node_option
@json_option
def job_status(job_id_text: str, node_url: str, as_json: bool) -> None:
    """Progress, escrow and latest held-out accuracy of job ID (``pending`` until mined)."""
    view = _fetch_view(NodeClient(node_url), _job_id(job_id_text))
    if as_json:
        _print_json(view)
        return
    spec = view["spec"]
    fee_per_step = int(spec["fee_per_step"])
    paid = int(view["steps_done"]) * fee_per_step
    held = int(view["escrow_left"])
    refunded = int(spec["total_steps"]) * fee_per_step - paid - held
    click.echo(f"job       {view['job_id']}")
    click.echo(f"name      {view['name']}")
    click.echo(f"owner     {view['owner']}")
    click.echo(f"status    {view['status']}" + (" (its submit is in the mempool, not mined yet)"
                                                 if view["status"] == "pending" else ""))
    click.echo(f"model     dims {'-'.join(map(str, spec['dims']))}, batch {spec['batch_size']}, "
               f"lr shift {spec['lr_shift']}, dataset {spec['dataset_id']}")
    click.echo(f"steps     {view['steps_done']} done, {view['steps_left']} left")
    click.echo(f"escrow    {format_amount(held)} held, {format_amount(paid)} paid to miners"
               + (f", {format_amount(refunded)} refunded" if refunded else "")
               + f" ({format_amount(fee_per_step)} per step)")
    click.echo(f"accuracy  {_accuracy(view.get('history') or [])}")


def _accuracy(history: list[Json]) -> str:
    if not history:
        return "not evaluated yet"
    last = history[-1]
    correct, total = int(last["correct"]), int(last["total"])
    share = f"{100 * correct / total:.2f}%" if total else "n/a"
    return f"{share} held-out ({correct}/{total}) after {last['steps']} steps, height {last['height']}"


@job.command("list")
@click.argument("account", default=DEFAULT_NAME, metavar="[NAME|ADDRESS]")
@click.option("--all", "show_all", is_flag=True, help="Every job on the chain, not only this account's.")
@node_option
@json_option
@pass_cli
def job_list(cli: CliContext, account: str, show_all: bool, node_url: str, as_json: bool) -> None:
    """Jobs of wallet NAME (default "default") or ADDRESS, pending ones first; --all for everyone's."""
    client = NodeClient(node_url)
    owner = None if show_all else _account_address(cli, account)
    pending = [_pending_view(tx) for tx in client.get_json("/api/mempool").get("txs", [])
               if tx.get("kind") == "job_submit"]
    rows = [*pending, *client.get_json("/api/jobs")["jobs"]]
    rows = [row for row in rows if owner is None or row["owner"] == owner]
    if as_json:
        _print_json({"jobs": rows})
        return
    if not rows:
        click.echo("no jobs" + ("" if owner is None else f" owned by {owner}"), err=True)
        return
    click.echo(f"{'JOB':<64}  {'STATUS':<9}  {'STEPS':>15}  {'DIMS':<14}  NAME")
    for row in rows:
        steps = f"{row['steps_done']}/{row['spec']['total_steps']}"
        dims = "-".join(map(str, row["spec"]["dims"]))
        click.echo(f"{row['job_id']:<64}  {row['status']:<9}  {steps:>15}  {dims:<14}  {row['name']}")


@job.command("wait")
@click.argument("job_id_text", metavar="ID")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Give up (exit 1) after S seconds [default: wait for ever].")
@click.option("--poll", type=click.FloatRange(min=0.05), default=2.0, show_default=True, metavar="S",
              help="Seconds between polls of the node.")
@click.option("--steps", "until_steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Return once N steps are done instead of waiting for the end.")
@node_option
@json_option
def job_wait(job_id_text: str, timeout: float | None, poll: float, until_steps: int | None, node_url: str,
             as_json: bool) -> None:
    """Wait until job ID is finished (or cancelled), printing its progress on stderr."""
    job_id = _job_id(job_id_text)
    client = NodeClient(node_url)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        view = _fetch_view(client, job_id)
        progress = (view["status"], view["steps_done"], _accuracy(view.get("history") or []))
        if progress != last:
            last = progress
            total = view["spec"]["total_steps"]
            click.echo(f"{view['status']}: {view['steps_done']}/{total} steps; accuracy {progress[2]}", err=True)
        done = view["status"] in ("finished", "cancelled") or (
            until_steps is not None and int(view["steps_done"]) >= until_steps)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"job {job_id} is still {view['status']} after {timeout:g}s "
                           f"({view['steps_done']}/{view['spec']['total_steps']} steps)")
        time.sleep(poll)
    if as_json:
        _print_json(view)
    else:
        click.echo(f"{view['status']} {view['steps_done']} steps")


def _fetch_dataset(client: NodeClient, dataset_id: str) -> Dataset:
    """The job's dataset: built-in ones are rebuilt locally, published ones fetched from the node."""
    from consensus.pouw_seal import builtin_datasets
    from pouw.datasets import Dataset

    builtin = builtin_datasets().get(bytes.fromhex(dataset_id))
    if builtin is not None:
        return builtin
    from chain.types import decode_dataset_parts
    from pouw.datasets import assemble_parts

    raw = client.request(f"/api/datasets/{dataset_id}?raw=1")
    if dataset_id_of(raw).hex() != dataset_id:
        raise NodeError(f"the node sent dataset {dataset_id_of(raw).hex()} for {dataset_id}")
    try:
        parts = decode_dataset_parts(raw)
        if parts is None:
            return Dataset.decode(raw)
        # Each part is checked against its id in the manifest, whose hash is the dataset id.
        return assemble_parts(parts, [client.request(f"/api/datasets/{part.hex()}") for part in parts.part_ids])
    except PouwError as exc:
        raise NodeError(f"the node sent a bad dataset {dataset_id}: {exc}") from None


MODEL_FETCH_TRIES = 4
"""Reads of a job's model before a hash that never matches its view is an error: a block that trains
the job between the view and the model moves both, so the pair is read again."""


def _model_file(client: NodeClient, job_id: str) -> tuple[ModelFile, Dataset]:
    """Job ``job_id``'s current model as a self-describing :class:`pouw.modelfile.ModelFile`."""
    from consensus.presets import model_config
    from pouw.model import ModelState
    from pouw.modelfile import ModelFile

    view = _fetch_view(client, job_id)
    if view["status"] == "pending":
        raise CliError(f"job {job_id} is pending: its submit is not mined yet, so it has no model")
    spec = view["spec"]
    job_spec = JobSpec(dims=tuple(spec["dims"]), dataset_id=bytes.fromhex(spec["dataset_id"]),
                       batch_size=spec["batch_size"], lr_shift=spec["lr_shift"], total_steps=spec["total_steps"],
                       fee_per_step=spec["fee_per_step"])
    for _ in range(MODEL_FETCH_TRIES):
        raw = client.request(f"/api/jobs/{job_id}/model")
        try:
            state = ModelState.decode(raw, model_config(job_spec))
        except PouwError as exc:
            raise NodeError(f"the node sent a model that does not decode: {exc}") from None
        if not view.get("model_hash") or state.hash().hex() == view["model_hash"]:
            break
        view = _fetch_view(client, job_id)  # a block may have trained the job between the two reads
        if state.hash().hex() == view.get("model_hash"):
            break
    else:
        raise NodeError(f"the node sent a model whose hash is not the job's {view['model_hash']}")
    dataset = _fetch_dataset(client, spec["dataset_id"])
    status = client.status()
    model = ModelFile(config=model_config(job_spec), state=state, n_classes=dataset.n_classes, job_id=job_id,
                      dataset_id=spec["dataset_id"], chain_id=int(status["chain_id"]), preset=str(status["preset"]),
                      feature_scaling=dataset.scaling)
    return model, dataset


@job.command("download")
@click.argument("job_id_text", metavar="ID")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the model [default: job-<id prefix>.safetensors].")
@node_option
@json_option
def job_download(job_id_text: str, out: Path | None, node_url: str, as_json: bool) -> None:
    """Save job ID's current model as a self-describing .safetensors file (see docs/wallet.md).

    The file holds the int32 master weights w0, w1, ... and metadata: dims, classes, number
    format, job id, dataset id, step, chain, and the dataset's feature scaling when it has one.
    Load it with ``pouw.modelfile.load``; predict with ``pouw-wallet job predict``.
    """
    job_id = _job_id(job_id_text)
    model, _ = _model_file(NodeClient(node_url), job_id)
    raw = model.to_bytes()
    path = out if out is not None else Path(f"job-{job_id[:16]}.safetensors")
    _write_atomically(path, raw)
    if as_json:
        _print_json({"path": str(path), "bytes": len(raw), **model.metadata()})
        return
    click.echo(str(path))
    click.echo(f"wrote the model after {model.step} steps ({len(raw)} bytes)", err=True)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@job.command("predict")
@click.argument("job_or_model", metavar="ID|MODEL.safetensors")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Rows to classify: .csv (features per line) or .npz (array x, or x_test).")
@click.option("--labels/--no-labels", default=False, show_default=True,
              help="The .csv's last column (or the .npz's y / y_test) holds true labels: report accuracy.")
@node_option
@json_option
def job_predict(job_or_model: str, input_path: Path, labels: bool, node_url: str, as_json: bool) -> None:
    """Classify the rows of FILE with job ID's current model (or a downloaded model file).

    Prints one class per row. Float features go through the dataset's recorded scaling; the
    answer for a row never depends on the other rows in FILE.
    """
    from pouw.modelfile import load

    x, y = read_rows(input_path, labels)  # a bad input file fails before any network call
    if job_or_model.endswith(".safetensors") or Path(job_or_model).is_file():
        model = load(job_or_model)
    else:
        model, _ = _model_file(NodeClient(node_url), _job_id(job_or_model))
    predictions = model.predict(x)
    correct = int((predictions == y).sum()) if y is not None else None
    if as_json:
        out: Json = {"job_id": model.job_id, "step": model.step, "predictions": [int(p) for p in predictions]}
        if correct is not None:
            out.update(correct=correct, total=len(predictions))
        _print_json(out)
    else:
        for p in predictions:
            click.echo(int(p))
    if correct is not None:
        share = 100 * correct / len(predictions) if len(predictions) else 0.0
        click.echo(f"accuracy {share:.2f}% ({correct}/{len(predictions)})", err=True)


def read_rows(path: Path, labels: bool) -> tuple[Any, Any]:
    """(features, labels or None) from a .csv (numbers, comma-separated) or .npz."""
    import numpy as np

    from pouw.quantize import read_csv

    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                key = "x" if "x" in archive.files else "x_test"
                if key not in archive.files:
                    raise CliError(f"{path} holds no array 'x' or 'x_test'")
                x = np.asarray(archive[key])
                ykey = "y" if key == "x" else "y_test"
                y = np.asarray(archive[ykey]) if labels and ykey in archive.files else None
        except (ValueError, EOFError) as exc:
            raise CliError(f"{path} is not a readable .npz: {exc}") from None
        if labels and y is None:
            raise CliError(f"--labels: {path} holds no {ykey!r}")
        return x, y
    table = read_csv(path)
    if labels:
        return table[:, :-1], table[:, -1].astype(np.int64)
    return table, None


@job.command("cancel")
@click.argument("job_id_text", metavar="ID")
@signer_option
@wait_options
@node_option
@json_option
@pass_cli
def job_cancel(cli: CliContext, job_id_text: str, name: str, wait: bool, timeout: float, node_url: str,
               as_json: bool) -> None:
    """End job ID (yours, still active); its unspent escrow comes back. Prints the txid."""
    job_id = _job_id(job_id_text)
    sender = cli.wallet().address(name)
    node = Node.connect(node_url)
    view = _fetch_job(node.client, job_id)
    if view["owner"] != encode_address(sender):
        raise CliError(f"job {job_id} belongs to {view['owner']}, not to wallet {name!r} ({encode_address(sender)})")
    if view["status"] != "active":
        raise CliError(f"job {job_id} is {view['status']}; only an active job can be cancelled")
    nonce = node.next_nonce(sender)
    body = node.priced(lambda f: JobCancel(chain_id=node.chain_id, nonce=nonce, fee=f, job_id=bytes.fromhex(job_id)))
    [txid] = _sign_and_submit(cli, node, name, [body])
    _report_tx(node, txid, wait, timeout, as_json, job_id=job_id)
    if wait:
        after = _fetch_job(node.client, job_id)
        spec = after["spec"]
        refund = (int(spec["total_steps"]) - int(after["steps_done"])) * int(spec["fee_per_step"])
        click.echo(f"refunded {format_amount(refund)} after {after['steps_done']} steps", err=True)


# ---------------------------------------------------------------------------------------------
# Datasets


@main.group()
def dataset() -> None:
    """Publish training data on chain (it becomes public), or inspect a file first."""


@dataset.command("publish")
@click.argument("source", metavar="PATH.npz|PATH.csv")
@dataset_split_options
@part_bytes_option
@signer_option
@wait_options
@node_option
@json_option
@pass_cli
def dataset_publish(cli: CliContext, source: str, test_share: float, seed: int, name: str, wait: bool,
                    timeout: float, node_url: str, as_json: bool, part_bytes: int) -> None:
    """Publish a dataset for training jobs; prints its id.

    A .npz holds x_train, y_train, x_test, y_test (or x, y: then --test-share of the rows, drawn
    with --seed, are held out). A .csv holds one row per line, features then an integer label.
    Float features (or integers outside 0..63) are quantized to 0..63 per feature, from the
    training rows' range; the scaling is recorded in the dataset so ``job predict`` applies it.
    """
    dataset = load_job_dataset(source, test_share=test_share, seed=seed)
    sender = cli.wallet().address(name)
    node = Node.connect(node_url)
    dataset_id, _ = _publish_bodies(node, dataset, 0, part_bytes)
    if node.has_dataset(dataset, dataset_id):
        raise CliError(f"dataset {dataset_id.hex()} is already on chain")
    _, bodies = _publish_bodies(node, dataset, node.next_nonce(sender), part_bytes, announce=True)
    txid = _sign_and_submit(cli, node, name, bodies, timeout)[-1]
    click.echo(f"dataset {dataset.n_train} training rows, {len(dataset.x_test)} held out, {dataset.n_features} "
               f"features, {dataset.n_classes} classes" + (", quantized" if dataset.scaling else ""), err=True)
    if as_json:
        _report_tx(node, txid, wait, timeout, True, dataset_id=dataset_id.hex(), n_train=dataset.n_train,
                   n_test=len(dataset.x_test), n_classes=dataset.n_classes, quantized=dataset.scaling is not None,
                   parts=len(bodies) - 1)
        return
    click.echo(dataset_id.hex())
    if wait:
        _wait(node, txid, timeout)


if __name__ == "__main__":
    main()
