"""The mining loop of ``pouw-mine``: pull a template from a node, train with the PoUW core, submit.

Runs in its own process (never in the node's). Keeps one :class:`pouw.mining.Miner` session per
(job, start state, miner address): a refreshed template (new transactions, new timestamp, so a new
lottery seed σ) continues the same training trajectory; only the tickets restart. When the tip
moves, the job's start state may change and a new session begins from the node's model.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chain.errors import PouwError
from chain.types import Header
from consensus.presets import Preset, get_preset
from pouw.backends import Backend
from pouw.datasets import Dataset, digits
from pouw.mining import Miner, MiningProgress
from pouw.model import ModelConfig, ModelState
from wallet.client import COOKIE_ENV, DATADIR_ENV, PASSWORD_ENV, RpcCredentials

TEMPLATE_MAX_AGE = 20.0
"""Seconds before a template is refreshed even if the tip did not move (to pick up new txs)."""
TIP_POLL_SECONDS = 1.0
STEPS_PER_ROUND = 4


class MinerError(PouwError):
    """The miner cannot go on (node unreachable, bad answer, no device)."""


class _Unauthorized(MinerError):
    """The node refused our credential (or we had none)."""


class NodeClient:
    """A small synchronous client for the node's HTTP API; POSTs carry the node's cookie or RPC
    password (:class:`wallet.client.RpcCredentials`), re-read once after a 401."""

    def __init__(self, url: str, timeout: float = 30.0, credentials: RpcCredentials | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.credentials = credentials or RpcCredentials()

    def _preset(self) -> str | None:
        try:
            preset = self.get_json("/api/status").get("preset")
        except (MinerError, AttributeError):
            return None
        return preset if isinstance(preset, str) and preset.isidentifier() else None

    def _request(self, path: str, body: dict[str, Any] | None = None) -> bytes:
        if body is None:
            return self._send(path, None, None)
        auth = self.credentials.header(self._preset)
        try:
            return self._send(path, body, auth)
        except _Unauthorized as exc:
            fresh = self.credentials.header(self._preset, reload=True)
            if fresh is not None and fresh != auth:
                try:
                    return self._send(path, body, fresh)  # the node restarted with a new cookie
                except _Unauthorized:
                    pass
            raise MinerError(f"{exc} (tried {self.credentials.where()}; pass --datadir/--cookie, "
                             f"or set {COOKIE_ENV}, {DATADIR_ENV} or {PASSWORD_ENV})") from None

    def _send(self, path: str, body: dict[str, Any] | None, auth: str | None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        elif self.credentials.password is not None:
            headers["Authorization"] = f"Bearer {self.credentials.password}"
        request = urllib.request.Request(self.url + path, data=data, method="POST" if body is not None else "GET",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                message = json.loads(payload).get("error") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            if body is not None and exc.code in (400, 409):
                return bytes(payload)
            if exc.code == 401:
                raise _Unauthorized(f"node answered 401: {message}") from None
            raise MinerError(f"node answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MinerError(f"cannot reach the node at {self.url}: {reason}") from None

    def get_json(self, path: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads(self._request(path))
        except ValueError as exc:
            raise MinerError(f"node sent invalid JSON for {path}") from exc
        return result

    def get_bytes(self, path: str) -> bytes:
        return self._request(path)

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads(self._request(path, body))
        except ValueError as exc:
            raise MinerError(f"node sent invalid JSON for {path}") from exc
        return result


@dataclass
class MinerStats:
    started: float
    steps: int = 0
    macs: int = 0
    tiles: int = 0
    blocks_found: int = 0
    blocks_rejected: int = 0
    blocks_stale: int = 0
    best_ticket: bytes | None = None
    height: int = 0
    job: str = ""

    def rates(self) -> tuple[float, float, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.steps / elapsed, self.macs / elapsed, self.tiles / elapsed


Reporter = Callable[[MinerStats, str | None], None]
"""Called with the stats and an optional event line (block found, refresh, error)."""


class MiningLoop:
    def __init__(self, client: NodeClient, address: str, backend: Backend, job: str | None = None,
                 report: Reporter | None = None) -> None:
        self.client = client
        self.address = address
        self.backend = backend
        self.job = job
        self.report = report or (lambda stats, event: None)
        self.stats = MinerStats(started=time.monotonic())
        self._session: Miner | None = None
        self._session_key: tuple[str, str] | None = None
        self._datasets: dict[str, Dataset] = {}
        self._base_steps = self._base_macs = self._base_tiles = 0

    def _dataset(self, dataset_id: str) -> Dataset:
        if dataset_id not in self._datasets:
            builtin = digits()
            if builtin.id.hex() == dataset_id:
                self._datasets[dataset_id] = builtin
            else:
                self._datasets[dataset_id] = Dataset.decode(self.client.get_bytes(f"/api/datasets/{dataset_id}"))
        return self._datasets[dataset_id]

    def _session_for(self, template: dict[str, Any], preset: Preset) -> Miner:
        key = (template["job_id"], template["start_state_hash"])
        if self._session is not None and self._session_key == key and not self._session.exhausted:
            return self._session
        self._base_steps, self._base_macs, self._base_tiles = self.stats.steps, self.stats.macs, self.stats.tiles
        spec = template["job"]["spec"]
        config = ModelConfig(dims=tuple(spec["dims"]), batch_size=spec["batch_size"], lr_shift=spec["lr_shift"])
        start = ModelState.decode(self.client.get_bytes(f"/api/jobs/{template['job_id']}/start-model"), config)
        if start.hash().hex() != template["start_state_hash"]:
            raise MinerError("the node's start model does not match the template")
        self._session = Miner(preset.pouw, config, self._dataset(spec["dataset_id"]), start,
                              bytes.fromhex(template["trajectory_seed"]), self.backend)
        self._session_key = key
        return self._session

    def template(self) -> dict[str, Any]:
        query = f"/api/mining/template?address={self.address}"
        if self.job:
            query += f"&job={self.job}"
        return self.client.get_json(query)

    def run(self, max_blocks: int | None = None, should_stop: Callable[[], bool] = lambda: False) -> MinerStats:
        while not should_stop() and (max_blocks is None or self.stats.blocks_found < max_blocks):
            template = self.template()
            preset = get_preset(template["preset"])
            header = Header.decode(bytes.fromhex(template["header"]))
            sigma = header.mining_hash
            if sigma.hex() != template["template_id"]:
                raise MinerError("template id does not match its header")
            session = self._session_for(template, preset)
            self.stats.height = template["height"]
            self.stats.job = template["job"]["name"] or template["job_id"][:16]
            fetched = time.monotonic()
            last_poll = fetched
            while not should_stop():
                result = session.mine(sigma, header.target, STEPS_PER_ROUND, self._progress)
                if result is not None:
                    self._submit(template, result)
                    self._session = None
                    break
                if session.exhausted:
                    self.report(self.stats, "shard reached the block's step cap; starting over")
                    self._session = None
                    break
                now = time.monotonic()
                if now - fetched > TEMPLATE_MAX_AGE:
                    break
                if now - last_poll > TIP_POLL_SECONDS:
                    last_poll = now
                    if self.client.get_json("/api/status")["tip"] != template["parent_hash"]:
                        self.report(self.stats, f"tip moved past {template['height'] - 1}; new template")
                        break
        return self.stats

    def _progress(self, progress: MiningProgress) -> bool:
        self.stats.steps = self._base_steps + progress.steps
        self.stats.macs = self._base_macs + progress.macs
        self.stats.tiles = self._base_tiles + progress.tiles
        best = progress.best_ticket
        if best is not None and (self.stats.best_ticket is None or best < self.stats.best_ticket):
            self.stats.best_ticket = best
        self.report(self.stats, None)
        return False

    def _submit(self, template: dict[str, Any], result: Any) -> None:
        claim = result.seal_claim
        answer = self.client.post_json("/api/mining/submit", {
            "template_id": template["template_id"], "steps": claim.steps,
            "final_state_hash": claim.final_state_hash.hex(), "trajectory_root": claim.trajectory_root.hex(),
            "proof": claim.proof.hex(), "work": result.work_bytes.hex(),
        })
        if answer.get("status") == "accepted":
            self.stats.blocks_found += 1
            self.report(self.stats, f"block {answer['height']} {answer['hash'][:16]} accepted "
                                    f"({claim.steps} steps of {self.stats.job})")
        elif answer.get("status") == "stale":
            self.stats.blocks_stale += 1
            self.report(self.stats, "found a block on a stale tip; refreshing")
        else:
            self.stats.blocks_rejected += 1
            self.report(self.stats, f"block rejected: {answer.get('reason')}: {answer.get('detail')}")
