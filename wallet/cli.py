"""``pouw-wallet``: the command line over the key store (``new``, ``list``, ``address``, ``export``,
``import``).

Every command receives a :class:`CliContext` (``ctx.obj``) that holds the global options and knows
how to open the wallet and obtain a password; commands that talk to a node (``balance``, ``send``,
``job ...``) add a ``--node`` option there and a command function here. Any :class:`PouwError` or
``OSError`` escaping a command becomes one ``error: ...`` line on stderr and exit status 1.

``POUW_KDF_N`` (for tests and slow machines only) sets the scrypt ``n`` used for new key files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from chain.errors import PouwError
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.keystore import CorruptKeystore, ScryptParams, Wallet

DEFAULT_NAME = "default"
KDF_N_ENV = "POUW_KDF_N"


class CliError(click.ClickException):
    """A failure reported as a single ``error: ...`` line."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr)


class WalletGroup(click.Group):
    """A group whose commands report the project's errors as :class:`CliError`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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


@click.group(cls=WalletGroup)
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
    """Keys and addresses for the PoUW chain."""
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
@pass_cli
def list_(cli: CliContext) -> None:
    """Print every key's name and address (no password needed).

    A corrupt key file gets an ``error:`` line of its own; the others are still listed.
    """
    wallet = cli.wallet()
    names = wallet.names()
    if not names:
        click.echo(f"no keys in {wallet.directory}", err=True)
    width = max(map(len, names), default=0)
    failed = False
    for name in names:
        try:
            shown = encode_address(wallet.address(name))
        except CorruptKeystore as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
        else:
            click.echo(f"{name:<{width}}  {shown}")
    if failed:
        sys.exit(1)


@main.command()
@name_argument
@pass_cli
def address(cli: CliContext, name: str) -> None:
    """Print the address of key NAME (no password needed)."""
    click.echo(encode_address(cli.wallet().address(name)))


@main.command()
@name_argument
@pass_cli
def export(cli: CliContext, name: str) -> None:
    """Decrypt key NAME and print its private key as hex. Anyone who sees it owns the funds."""
    wallet = cli.wallet()
    wallet.address(name)  # a missing or corrupt file fails before the prompt
    click.echo(wallet.load(name, cli.password(new=False)).hex())


if __name__ == "__main__":
    main()
