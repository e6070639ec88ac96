"""The node's HTTP JSON API (aiohttp): status, blocks, transactions, accounts, jobs, mempool, mining.

Every route answers JSON (binary downloads excepted). Bad input — malformed or too deeply nested
JSON, wrong types, non-ASCII digits, unknown routes, oversized bodies, invalid transactions — gets a
4xx with ``{"error": ..., "reason": ...}``; no input gives a 5xx. An unexpected fault still answers
typed JSON without a stack trace (logged on the node): 400 for an input-shaped Python error, 503 for
anything else. Who may call what is :mod:`node.api_security`'s (cookie/password auth on every
state-changing route, JSON content type, Host/Origin checks, connection caps and timeouts).
Routes live under ``/api``; ``/metrics`` serves Prometheus text; ``/`` serves the dashboard when present.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import itertools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import web

from chain.encoding import MAX_MESSAGE_BYTES
from chain.errors import InvalidEncoding, PouwError, ValidationError
from chain.state import JobStatus, get_job, iter_jobs
from chain.types import Header, SignedTx
from consensus.pouw_seal import builtin_datasets
from consensus.seal import header_trajectory_seed
from node import metrics, views
from node.api_security import API_GUARD, API_SECURITY, ApiSecurity, ConnectionGuard
from node.chain_service import ChainService
from node.views import BadRequest, parse_uint

log = logging.getLogger("pouw.node.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PeersFn = Callable[[], list[dict[str, Any]]]
ConnectFn = Callable[[str, int], Awaitable[bool]]
MAX_JSON_BODY = 2 * MAX_MESSAGE_BYTES + 4096
MAX_EXCLUDED_JOBS = 16
"""Jobs a miner may ask a template to skip (those it has no draw left on under this tip)."""
"""Largest request body: a block's work data travels hex-encoded."""
MAX_TX_BYTES = 8 * 1024 * 1024
LARGE_BODY = 64 * 1024
"""Bodies above this size (or of unknown size) are read under :data:`MAX_LARGE_BODIES`."""
MAX_LARGE_BODIES = 2
"""Large bodies read and parsed at once; more wait up to :data:`LARGE_BODY_WAIT` s, then get a 429."""
LARGE_BODY_WAIT = 5.0
BODY_TIMEOUT = 60.0
"""Seconds to receive a whole request body (a slow sender is cut off with a 408)."""
MAX_JSON_DEPTH = 8
MAX_JSON_CONTAINERS = 64
MAX_JSON_SEPARATORS = 4096
"""Caps on a JSON body's ``[``/``{`` and ``,``/``:`` bytes (counted even inside strings, before
parsing): every API body is one flat object, so these only stop nesting bombs and bodies that would
parse into millions of objects."""
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, RecursionError)


def error(status: int, message: str, reason: str | None = None) -> web.Response:
    return web.json_response({"error": message, "reason": reason}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return error(400, str(exc), "bad-request")
    except ValidationError as exc:
        return error(400, str(exc), exc.reason.value)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason, exc.reason.lower().replace(" ", "-"))
    except PouwError as exc:
        return error(409, str(exc), "unavailable")
    except INPUT_ERRORS:
        log.exception("unexpected input error on %s %s", request.method, request.path)
        return error(400, "the request could not be processed", "unexpected-input")
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error(503, "the node could not answer this request", "internal")


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A JSON object from ``raw``, refusing nesting bombs and value floods before parsing."""
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_CONTAINERS:
        raise BadRequest(f"body nests more than {MAX_JSON_CONTAINERS} JSON arrays/objects")
    if raw.count(b",") + raw.count(b":") > MAX_JSON_SEPARATORS:
        raise BadRequest("body has too many JSON values")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


_large_bodies: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _large_body_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _large_bodies.get(loop)
    if slots is None:
        _large_bodies.clear()  # one event loop at a time in a node; tests start fresh ones
        slots = _large_bodies[loop] = asyncio.Semaphore(MAX_LARGE_BODIES)
    return slots


async def read_json(request: web.Request, max_bytes: int | None = None) -> dict[str, Any]:
    """The request's JSON object body, read within :data:`BODY_TIMEOUT` (and a large-body slot)."""
    size = request.content_length
    if max_bytes is not None and size is not None and size > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
    if size is not None and size <= LARGE_BODY:
        return parse_json_body(await _read_body(request, max_bytes))
    slots = _large_body_slots()
    try:
        await asyncio.wait_for(slots.acquire(), LARGE_BODY_WAIT)
    except TimeoutError:
        raise web.HTTPTooManyRequests(reason="Too many large requests at once") from None
    try:
        raw = await _read_body(request, max_bytes)
        return await asyncio.to_thread(parse_json_body, raw) if len(raw) > LARGE_BODY else parse_json_body(raw)
    finally:
        slots.release()


async def _read_body(request: web.Request, max_bytes: int | None) -> bytes:
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason="Request body too slow") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(raw))
    return raw


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    return max(low, min(parse_uint(raw, name, 12), high))


def parse_host(text: str) -> str:
    """A peer's host as the API accepts it: an IP literal or an ASCII DNS name."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not HOST_NAME.fullmatch(bare) or ".." in bare:
        raise BadRequest("address must be HOST:PORT with an IP address or an ASCII host name")
    return bare


def expected_block_macs(reference_work: int, target: int) -> int:
    """Multiply-accumulates a block takes on average at ``target``: each MAC wins with odds
    ``target / (reference_work · 2^256)`` whatever the tile (the inverse of ``pouw.params.target_for_work``)."""
    return (reference_work << 256) // max(target, 1)


def useful_work_window(reference_work: int, headers: list[Header]) -> dict[str, Any]:
    """The network's useful-work rate over consecutive canonical headers (oldest first): the expected
    MACs of every block after the first, over the seconds between the first and the last timestamp.
    Big integers travel as decimal strings; ``mac_rate`` is null when the window spans no time."""
    pairs = list(itertools.pairwise(headers))
    work = [expected_block_macs(reference_work, h.target) for _, h in pairs]
    seconds = headers[-1].timestamp - headers[0].timestamp if headers else 0
    return {
        "window_blocks": len(pairs), "window_seconds": seconds, "window_macs": str(sum(work)),
        "mac_rate": str(sum(work) // seconds) if seconds > 0 else None,
        "blocks": [
            {"height": h.height, "timestamp": h.timestamp, "interval": h.timestamp - parent.timestamp,
             "expected_macs": str(macs)}
            for (parent, h), macs in zip(pairs, work, strict=True)
        ],
    }


def field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(f"field {name!r} must be a {kind.__name__}")
    return value


class Api:
    def __init__(self, chain: ChainService, peers: PeersFn | None = None, connect: ConnectFn | None = None) -> None:
        self.chain = chain
        self.peers = peers or (lambda: [])
        self.connect = connect
        self.collector = metrics.ChainCollector()
        metrics.set_build_info(metrics.package_version(), chain.preset.name, chain.preset.chain_id)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/status", self.status),
            web.get("/api/blocks", self.blocks),
            web.get("/api/blocks/{id}", self.block),
            web.get("/api/blocks/{id}/raw", self.block_raw),
            web.post("/api/blocks", self.post_block),
            web.post("/api/tx", self.post_tx),
            web.get("/api/tx/{txid}", self.get_tx),
            web.get("/api/accounts/{address}", self.account),
            web.get("/api/jobs", self.jobs),
            web.get("/api/jobs/{id}", self.job),
            web.get("/api/jobs/{id}/model", self.job_model),
            web.get("/api/jobs/{id}/start-model", self.job_start_model),
            web.get("/api/datasets/{id}", self.dataset),
            web.get("/api/mempool", self.mempool),
            web.get("/api/peers", self.get_peers),
            web.post("/api/peers/connect", self.connect_peer),
            web.get("/api/network", self.network),
            web.get("/api/mining/template", self.mining_template),
            web.post("/api/mining/submit", self.mining_submit),
            web.get("/metrics", self.metrics),
        ]

    # -- chain ------------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        chain = self.chain

        def read() -> dict[str, Any]:
            head = chain.head
            header = chain.head_header()
            return {
                "chain_id": chain.preset.chain_id, "preset": chain.preset.name,
                "genesis": chain.genesis.hash.hex(), "height": head.height, "tip": head.hash.hex(),
                "tip_timestamp": header.timestamp, "target": f"{header.target:064x}",
                "next_target": f"{chain.next_target(head.hash):064x}", "work": str(head.work),
                "mempool": len(chain.mempool), "mempool_bytes": chain.mempool.size_bytes,
                "block_time": chain.preset.block_time, "min_fee": chain.preset.min_fee,
                "fee_per_byte": chain.preset.fee_per_byte,
                "blocks_imported": chain.blocks_imported, "blocks_rejected": chain.blocks_rejected,
            }

        body = await chain.read(read)
        peers = self.peers()
        body["peers"] = len(peers)
        body["sync"] = "synced" if all(p.get("height", 0) <= body["height"] for p in peers) else "syncing"
        return web.json_response(body)

    async def blocks(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 20, 1, 200)
        before = request.query.get("before")
        top = int_param(request, "before", 0, 0, 1 << 62) if before is not None else None
        rows = await self.chain.read(lambda: [views.block_summary(b) for b in self.chain.recent_blocks(limit, top)])
        return web.json_response({"blocks": rows})

    async def _find_block(self, ident: str) -> Any:
        if len(ident) != 64:
            found = await self.chain.read(self.chain.db.block_at, parse_uint(ident, "block id", 19))
        else:
            found = await self.chain.read(self.chain.db.get_block, views.parse_hash(ident, "block id"))
        if found is None:
            raise web.HTTPNotFound(reason="Block not found")
        return found

    async def block(self, request: web.Request) -> web.Response:
        found = await self._find_block(request.match_info["id"])
        return web.json_response(views.block(found))

    async def block_raw(self, request: web.Request) -> web.Response:
        found = await self._find_block(request.match_info["id"])
        return web.Response(body=found.encode(), content_type="application/octet-stream")

    async def post_block(self, request: web.Request) -> web.Response:
        body = await read_json(request, 2 * self.chain.preset.max_block_bytes + 4096)
        raw = views.parse_hex(body.get("block"), "block", self.chain.preset.max_block_bytes)
        began = time.perf_counter()
        outcome = await self.chain.submit_raw_block(raw)
        metrics.block_outcome(outcome.status.value, outcome.reason, "api", time.perf_counter() - began)
        status = 200 if outcome.ok else (202 if outcome.status in ("orphan", "held") else 400)
        return web.json_response(
            {"status": outcome.status.value, "hash": outcome.block_hash.hex(), "reason": outcome.reason,
             "detail": outcome.detail, "became_tip": outcome.became_tip}, status=status)

    async def post_tx(self, request: web.Request) -> web.Response:
        body = await read_json(request, 2 * MAX_TX_BYTES + 4096)
        raw = views.parse_hex(body.get("tx"), "tx", MAX_TX_BYTES)
        try:
            tx = SignedTx.decode(raw)
        except InvalidEncoding as exc:
            raise BadRequest(f"transaction encoding: {exc}") from exc
        try:
            txid = await self.chain.submit_tx(tx)
        except ValidationError as exc:
            metrics.tx_submitted(exc.reason.value)
            raise
        metrics.tx_submitted("accepted")
        return web.json_response({"txid": txid.hex(), "status": "pending"})

    async def get_tx(self, request: web.Request) -> web.Response:
        txid = views.parse_hash(request.match_info["txid"], "txid")
        found = await self.chain.read(self.chain.find_tx, txid)
        if found is None:
            raise web.HTTPNotFound(reason="Transaction not found")
        signed, block = found
        out = views.tx(signed, block)
        if block is not None:
            out["confirmations"] = self.chain.head.height - block.height + 1
        return web.json_response(out)

    async def account(self, request: web.Request) -> web.Response:
        addr = views.parse_address(request.match_info["address"])
        chain = self.chain

        def read() -> dict[str, Any]:
            balance, nonce = chain.balance(addr)
            history = [
                {**views.tx(row["tx"], row["block"]), "timestamp": row["block"].header.timestamp}
                for row in chain.account_history(addr, limit=int_param(request, "history", 20, 0, 500))
            ]
            return {
                "address": views.address(addr), "balance": balance, "balance_coins": views.format_amount(balance),
                "nonce": nonce, "next_nonce": chain.mempool.next_nonce(addr, chain.db.state),
                "pending": [views.tx(t) for t in chain.mempool.pending_for(addr)], "history": history,
            }

        return web.json_response(await chain.read(read))

    # -- jobs -------------------------------------------------------------------------------------

    async def jobs(self, request: web.Request) -> web.Response:
        def read() -> list[dict[str, Any]]:
            rows = []
            for job_id, record in iter_jobs(self.chain.db.state):
                row = views.job(job_id, record)
                latest = self.chain.job_history(job_id, limit=1)[-1:]  # the latest held-out evaluation
                row["accuracy"] = latest[0][2] / latest[0][3] if latest and latest[0][3] else None
                rows.append(row)
            return rows

        rows = await self.chain.read(read)
        rows.sort(key=lambda r: (-r["updated_height"], r["job_id"]))
        return web.json_response({"jobs": rows})

    async def _job(self, request: web.Request) -> tuple[bytes, Any]:
        job_id = views.parse_hash(request.match_info["id"], "job id")
        record = await self.chain.read(lambda: get_job(self.chain.db.state, job_id))
        if record is None:
            raise web.HTTPNotFound(reason="Job not found")
        return job_id, record

    async def job(self, request: web.Request) -> web.Response:
        job_id, record = await self._job(request)
        out = views.job(job_id, record)
        history = await self.chain.read(self.chain.job_history, job_id)
        out["history"] = [
            {"height": h, "steps": s, "accuracy": (c / t if t else 0.0), "correct": c, "total": t,
             "loss": loss / (t << 16) if t else 0.0}
            for h, s, c, t, loss in history
        ]
        return web.json_response(out)

    async def job_model(self, request: web.Request) -> web.Response:
        job_id, record = await self._job(request)
        raw = await self.chain.read(self.chain.job_start_model, job_id)
        if request.query.get("format") == "npz":
            from consensus.presets import model_config
            from pouw.model import ModelState

            state = ModelState.decode(raw, model_config(record.spec))
            buffer = io.BytesIO()
            arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(state.weights)}
            arrays["step"] = np.array(state.step)
            np.savez(buffer, **arrays)
            return web.Response(body=buffer.getvalue(), content_type="application/octet-stream",
                                headers={"Content-Disposition": f'attachment; filename="{job_id.hex()[:16]}.npz"'})
        return web.Response(body=raw, content_type="application/octet-stream")

    async def job_start_model(self, request: web.Request) -> web.Response:
        job_id, _ = await self._job(request)
        raw = await self.chain.read(self.chain.job_start_model, job_id)
        return web.Response(body=raw, content_type="application/octet-stream")

    async def dataset(self, request: web.Request) -> web.Response:
        dataset_id = views.parse_hash(request.match_info["id"], "dataset id")
        builtin = builtin_datasets().get(dataset_id)
        source = self.chain.dataset_record_bytes if request.query.get("raw") == "1" else self.chain.dataset_bytes
        raw = builtin.encode() if builtin is not None else await self.chain.read(source, dataset_id)
        if raw is None:
            raise web.HTTPNotFound(reason="Dataset not found")
        return web.Response(body=raw, content_type="application/octet-stream")

    async def mempool(self, request: web.Request) -> web.Response:
        def read() -> dict[str, Any]:
            txs = [self.chain.mempool.get(t) for t in self.chain.mempool.txids()]
            return {"count": len(txs), "bytes": self.chain.mempool.size_bytes,
                    "txs": [views.tx(t) for t in txs[:500] if t is not None]}

        return web.json_response(await self.chain.read(read))

    async def get_peers(self, request: web.Request) -> web.Response:
        return web.json_response({"peers": self.peers()})

    async def connect_peer(self, request: web.Request) -> web.Response:
        """Ask the node to connect to a peer now (like ``bitcoin-cli addnode ... onetry``)."""
        body = await read_json(request, LARGE_BODY)
        host, sep, port_text = field(body, "address", str).rpartition(":")
        if not sep or not host:
            raise BadRequest("address must be HOST:PORT")
        port = parse_uint(port_text, "port", 5)
        if not 0 < port < 65536:
            raise BadRequest("port must be 1-65535")
        host = parse_host(host)
        if self.connect is None:
            raise web.HTTPConflict(reason="P2P is not running")
        connected = await self.connect(host, port)
        return web.json_response({"connected": bool(connected)})

    async def network(self, request: web.Request) -> web.Response:
        """Useful-work rate and block intervals over the last ``window`` blocks (genesis excluded: its
        timestamp is fixed by the preset), the expected work of the next block, and the node's clock."""
        window = int_param(request, "window", 60, 1, 1000)
        chain = self.chain
        reference = chain.preset.pouw.reference_work

        def read() -> dict[str, Any]:
            head = chain.head
            headers = []
            for height in range(max(1, head.height - window), head.height + 1):
                block_hash = chain.db.canonical_hash(height)
                header = chain.db.get_header(block_hash) if block_hash is not None else None
                if header is not None:
                    headers.append(header)
            return {
                "time": int(chain.clock()), "height": head.height, "block_time": chain.preset.block_time,
                "reference_work": reference,
                "expected_block_macs": str(expected_block_macs(reference, chain.next_target(head.hash))),
                **useful_work_window(reference, headers),
            }

        return web.json_response(await chain.read(read))

    # -- mining -----------------------------------------------------------------------------------

    async def mining_template(self, request: web.Request) -> web.Response:
        miner = views.parse_address(request.query.get("address", ""))
        job_text = request.query.get("job")
        job_id = views.parse_hash(job_text, "job id") if job_text else None
        exclude_text = request.query.get("exclude", "")
        excluded = [item for item in exclude_text.split(",") if item]
        if len(excluded) > MAX_EXCLUDED_JOBS:
            raise BadRequest(f"exclude lists at most {MAX_EXCLUDED_JOBS} jobs")
        exclude = frozenset(views.parse_hash(item, "excluded job id") for item in excluded)
        nonce_text = request.query.get("nonce", "0")
        if not (nonce_text.isascii() and nonce_text.isdigit() and len(nonce_text) <= 20) or int(nonce_text) >= 1 << 64:
            raise BadRequest("nonce must be a decimal u64")
        shard_nonce = int(nonce_text)
        template = await self.chain.template(miner, job_id, exclude, shard_nonce)  # none left: 409
        header = template.header
        return web.json_response({
            "template_id": template.template_id.hex(), "height": header.height,
            "parent_hash": template.parent_hash.hex(), "header": header.encode().hex(),
            "target": f"{header.target:064x}", "job_id": header.job_id.hex(),
            "job": views.job(header.job_id, template.job), "start_state_hash": header.start_state_hash.hex(),
            "shard_nonce": header.shard_nonce, "trajectory_seed": header_trajectory_seed(header).hex(),
            "preset": self.chain.preset.name, "txs": len(template.txs),
            "steps_left": template.steps_left, "max_steps": template.max_steps,
        })

    async def mining_submit(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        template_id = views.parse_hash(field(body, "template_id", str), "template_id")
        steps = field(body, "steps", int)
        if not 0 < steps < (1 << 32):
            raise BadRequest("steps out of range")
        began = time.perf_counter()
        outcome = await self.chain.submit_work(
            template_id, steps,
            views.parse_hash(field(body, "final_state_hash", str), "final_state_hash"),
            views.parse_hash(field(body, "trajectory_root", str), "trajectory_root"),
            views.parse_hex(body.get("proof"), "proof", 1 << 20),
            views.parse_hex(body.get("work"), "work", MAX_MESSAGE_BYTES),
            views.parse_hash(field(body, "prefix_root", str), "prefix_root") if "prefix_root" in body else None,
        )
        status = 200 if outcome.ok else (409 if outcome.status == "stale" else 400)
        metrics.work_submitted(outcome.status.value)
        metrics.block_outcome(outcome.status.value, outcome.reason, "miner", time.perf_counter() - began)
        return web.json_response(
            {"status": outcome.status.value, "hash": outcome.block_hash.hex(), "height": outcome.height,
             "reason": outcome.reason, "detail": outcome.detail, "became_tip": outcome.became_tip},
            status=status)

    # -- metrics ----------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text (``prometheus_client``): see node/metrics.py and docs/operations.md."""
        chain = self.chain
        peers = self.peers()
        reference = chain.preset.pouw.reference_work

        def read() -> metrics.ChainSnapshot:
            from consensus.presets import model_config

            head = chain.head
            header = chain.head_header()
            steps = macs = active = 0
            for _, record in iter_jobs(chain.db.state):
                steps += record.steps_done
                macs += record.steps_done * model_config(record.spec).macs_per_step()
                active += int(record.status == JobStatus.ACTIVE)
            headers = []
            for height in range(max(1, head.height - 30), head.height + 1):
                block_hash = chain.db.canonical_hash(height)
                found = chain.db.get_header(block_hash) if block_hash is not None else None
                if found is not None:
                    headers.append(found)
            rate = useful_work_window(reference, headers)["mac_rate"] if len(headers) > 1 else None
            return metrics.ChainSnapshot(
                height=head.height, tip_timestamp=header.timestamp, now=chain.clock(),
                target_bits=header.target.bit_length(), mempool_txs=len(chain.mempool),
                mempool_bytes=chain.mempool.size_bytes, peers=len(peers),
                best_peer_height=max((int(p.get("height", 0)) for p in peers), default=0),
                useful_steps=steps, useful_macs=macs, jobs_active=active,
                network_mac_rate=None if rate is None else int(rate),
            )

        self.collector.update(await chain.read(read))
        body, content_type = metrics.render([self.collector, chain.submissions])
        return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(
    chain: ChainService, peers: PeersFn | None = None, client_max_size: int = MAX_JSON_BODY,
    connect: ConnectFn | None = None, security: ApiSecurity | None = None, guard: ConnectionGuard | None = None,
) -> web.Application:
    """The API app. ``security`` defaults to loopback-only with an in-memory cookie (no file): a test
    authenticates with ``app[API_SECURITY].client_headers()``. Serve it with
    :class:`node.api_security.GuardedSite` so the connection caps and timeouts apply."""
    security = security or ApiSecurity()
    guard = guard or ConnectionGuard()
    app = web.Application(middlewares=[guard.middleware, errors_as_json, security.middleware],
                          client_max_size=client_max_size)
    app[API_SECURITY] = security
    app[API_GUARD] = guard
    app.on_startup.append(security.on_startup)
    app.on_cleanup.append(security.on_cleanup)
    app.add_routes(Api(chain, peers, connect).routes())
    return app
