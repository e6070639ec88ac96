"""The composition root: one ``pouw-node`` process — chain, HTTP API, dashboard and p2p — and its lifecycle.

Owns the datadir (a lock file keeps a second node out), starts the :class:`ChainService`, serves
the API on the RPC port and gossips on the p2p port, runs the periodic chores (retrying blocks
held for a future timestamp, expiring old mempool entries), and shuts everything down in order on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from chain.errors import PouwError
from consensus.presets import get_preset
from node.api import make_app
from node.api_security import ApiSecurity, GuardedSite
from node.chain_service import ChainService
from node.dashboard import add_dashboard
from node.p2p_bridge import peer_views, start_p2p
from p2p.service import P2PService

log = logging.getLogger("pouw.node")

DEFAULT_RPC_PORT = 8645
DEFAULT_P2P_PORT = 8646


class NodeError(PouwError):
    """The node cannot start (datadir locked, port taken, bad configuration)."""


@dataclass
class NodeConfig:
    datadir: Path
    preset: str = "devnet"
    rpc_host: str = "127.0.0.1"
    rpc_port: int = DEFAULT_RPC_PORT
    p2p_host: str = "127.0.0.1"
    p2p_port: int = DEFAULT_P2P_PORT
    connect: list[tuple[str, int]] = field(default_factory=list)
    listen: bool = True
    proof: bool = True
    verify_workers: int = 1
    log_level: str = "info"
    rpc_password: str | None = None
    rpc_allow_hosts: list[str] = field(default_factory=list)


class DatadirLock:
    """An exclusive ``flock`` on ``DATADIR/LOCK``, released when the process exits, however it exits."""

    def __init__(self, datadir: Path) -> None:
        self.path = datadir / "LOCK"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise NodeError(f"another pouw-node (pid {owner}) is using the data directory {self.path.parent}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.preset = get_preset(config.preset)
        self.api_security = ApiSecurity(config.datadir, config.rpc_host, config.rpc_password, config.rpc_allow_hosts)
        self.lock = DatadirLock(config.datadir)
        self.chain = ChainService(
            self.preset, config.datadir, proof=config.proof, verify_workers=config.verify_workers,
        )
        self.p2p: P2PService | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.rpc_port = config.rpc_port
        self.p2p_port = config.p2p_port

    def peers(self) -> list[dict[str, Any]]:
        return peer_views(self.p2p) if self.p2p is not None else []

    async def connect_peer(self, host: str, port: int) -> bool:
        if self.p2p is None:
            return False
        return bool(await self.p2p.connect(host, port))

    async def start(self) -> None:
        self.lock.acquire()
        try:
            await self.chain.start()
            app = make_app(self.chain, self.peers, connect=self.connect_peer, security=self.api_security)
            add_dashboard(app)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = GuardedSite(self._runner, self.config.rpc_host, self.config.rpc_port)
            try:
                await site.start()
            except OSError as exc:
                where = f"{self.config.rpc_host}:{self.config.rpc_port}"
                raise NodeError(f"cannot listen on {where}: {exc.strerror}") from exc
            self.rpc_port = _bound_port(site) or self.config.rpc_port
            await self._start_p2p()
            self._tasks.append(asyncio.create_task(self._chores()))
        except BaseException:
            await self.stop()
            raise
        log.info(
            "pouw-node %s: datadir %s, height %d, RPC http://%s:%d, p2p %s:%d",
            self.preset.name, self.config.datadir, self.chain.head.height, self.config.rpc_host,
            self.rpc_port, self.config.p2p_host, self.p2p_port,
        )

    async def _start_p2p(self) -> None:
        config = self.config
        try:
            self.p2p = await start_p2p(self.chain, config.datadir, host=config.p2p_host, port=config.p2p_port,
                                       connect=config.connect, listen=config.listen)
        except OSError as exc:
            where = f"{self.config.p2p_host}:{self.config.p2p_port}"
            raise NodeError(f"cannot listen for peers on {where}: {exc.strerror}") from exc
        self.p2p_port = self.p2p.port

    async def _chores(self) -> None:
        while True:
            await asyncio.sleep(10)
            try:
                await self.chain.retry_held()
                now = int(time.time())
                await self.chain.expire_mempool(now)
            except Exception:
                log.exception("periodic chores failed")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.p2p is not None:
            with contextlib.suppress(Exception):
                await self.p2p.stop()
            self.p2p = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(PouwError):
            await self.chain.stop()
        self.lock.release()


def _bound_port(site: web.TCPSite) -> int | None:
    server = site._server
    sockets = getattr(server, "sockets", None) if server is not None else None
    if sockets:
        return int(sockets[0].getsockname()[1])
    return None


async def run_node(config: NodeConfig, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT or SIGTERM; then shut down cleanly."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    print(
        f"pouw-node {node.preset.name} listening: RPC http://{config.rpc_host}:{node.rpc_port} "
        f"p2p {config.p2p_host}:{node.p2p_port} datadir {config.datadir}",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await node.stop()
