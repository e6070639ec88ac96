"""``pouw-node``: run a full node. Flags mirror the keys of an optional TOML ``--config`` file."""

from __future__ import annotations

import asyncio
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from chain.errors import PouwError
from consensus.presets import PRESETS
from node.api_security import ApiConfigError, check_bind
from node.daemon import DEFAULT_P2P_PORT, DEFAULT_RPC_PORT, NodeConfig, run_node

CONFIG_KEYS = {"datadir", "preset", "rpc_host", "rpc_port", "p2p_host", "p2p_port", "connect", "listen",
               "log_level", "verify_workers", "rpc_password", "rpc_allow_host"}


def parse_peer(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    return host, int(port)


def load_config(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise click.ClickException(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"config {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise click.ClickException(f"unknown config keys in {path}: {', '.join(sorted(unknown))}")
    return data


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pouw-chain", prog_name="pouw-node", message="%(prog)s %(version)s")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose keys mirror these flags (flags win).")
@click.option("--datadir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (default ~/.pouw/<preset>).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Network preset (default devnet).")
@click.option("--rpc-host", help="HTTP API address (default 127.0.0.1).")
@click.option("--rpc-password", envvar="POUW_RPC_PASSWORD", show_envvar=True,
              help="Password (16+ characters) accepted besides the datadir's .cookie; required to bind "
                   "--rpc-host to a non-loopback address. Prefer the env var (flags show in ps).")
@click.option("--rpc-allow-host", multiple=True,
              help="Host name the API answers to besides IP literals and localhost (repeatable).")
@click.option("--rpc-port", type=click.IntRange(0, 65535), help=f"HTTP API port (default {DEFAULT_RPC_PORT}; 0 = any).")
@click.option("--p2p-host", help="P2P listen address (default 127.0.0.1).")
@click.option("--p2p-port", type=click.IntRange(0, 65535), help=f"P2P port (default {DEFAULT_P2P_PORT}; 0 = any).")
@click.option("--connect", multiple=True, help="HOST:PORT of a peer to keep connected to (repeatable).")
@click.option("--listen/--no-listen", default=None, help="Accept inbound p2p connections (default yes).")
@click.option("--verify-workers", type=click.IntRange(0, 64), help="Processes for seal verification (default 1).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
def main(config_path: Path | None, **flags: Any) -> None:
    """Run a pouw-chain full node: block store, validation, mempool, p2p and the HTTP API."""
    settings: dict[str, Any] = load_config(config_path) if config_path else {}
    for key, value in flags.items():
        if value is not None and value != ():
            settings[key] = value
    preset = settings.get("preset", "devnet")
    if preset not in PRESETS:
        raise click.ClickException(f"unknown preset {preset!r}")
    datadir = Path(settings.get("datadir") or Path.home() / ".pouw" / preset).expanduser()
    rpc_host = str(settings.get("rpc_host", "127.0.0.1"))
    password = settings.get("rpc_password")
    try:
        warning = check_bind(rpc_host, str(password) if password is not None else None)
    except ApiConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    allow = settings.get("rpc_allow_host", [])
    connect = [parse_peer(p) if isinstance(p, str) else p for p in settings.get("connect", [])]
    level = str(settings.get("log_level", "info")).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = NodeConfig(
        datadir=datadir, preset=preset, rpc_host=rpc_host,
        rpc_password=str(password) if password is not None else None,
        rpc_allow_hosts=[allow] if isinstance(allow, str) else [str(h) for h in allow],
        rpc_port=int(settings.get("rpc_port", DEFAULT_RPC_PORT)), p2p_host=settings.get("p2p_host", "127.0.0.1"),
        p2p_port=int(settings.get("p2p_port", DEFAULT_P2P_PORT)), connect=connect,
        listen=bool(settings.get("listen", True)), verify_workers=int(settings.get("verify_workers", 1)),
        log_level=level.lower(),
    )
    import torch

    torch.set_num_threads(1)  # the node's own torch work (evaluation) is small matmuls
    try:
        asyncio.run(run_node(config))
    except PouwError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
