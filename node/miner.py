"""The mining loop of ``pouw-mine``: pull a template from a node, train with the PoUW core, submit.

Runs in its own process (never in the node's). Keeps one :class:`pouw.mining.Miner` session per
(job, start state, miner address): a refreshed template continues the same training trajectory;
only the tickets restart. When the tip moves, the job's start state may change and a new session
begins from the node's model.

Shards and nonces (docs/protocol.md Part IV §6.1): the miner picks the header's ``shard_nonce``
(the template's ``nonce=`` query), which is in σ and in the trajectory seed τ. A shard that reaches
the block cap (``max_steps_per_block``) without a win is followed by a new shard under the next
nonce, trained from the job's start state: a fresh trajectory, a fresh ticket for every step, and
the chain never waits on one miner's draws running out.

Jobs end cleanly (Part IV §6): a template says how many steps its job has left (``steps_left``)
and the most a seal on it may claim (``max_steps``: that, capped per block). The shard never runs
past ``max_steps``. A finishing job (``max_steps`` below the cap) whose shard is spent hands the
miner to the next best job (``exclude=``) until the tip moves, because its short shards pay less
per MAC (Part IV §12); then its shard starts over under the new seed. When every job is excluded,
the miner does not wait: it mines the best job again under the next nonce.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chain.errors import PouwError
from chain.types import Header
from consensus.presets import Preset, get_preset
from consensus.seal import header_trajectory_seed
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
    """Submissions the node accepted."""
    blocks_stale: int = 0
    """Submissions that arrived after the tip moved on (not the miner's fault)."""
    blocks_rejected: int = 0
    """Submissions the node rejected; ``rejections`` counts them by reason."""
    rejections: Counter[str] = field(default_factory=Counter)
    best_ticket: bytes | None = None
    height: int = 0
    job: str = ""
    steps_left: int = 0
    """Steps the job being mined has left (its template's ``steps_left``)."""
    shard_nonce: int = 0
    """The shard nonce of the template being mined."""

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
        self._session_key: tuple[str, str, int] | None = None
        self._datasets: dict[str, Dataset] = {}
        self._base_steps = self._base_macs = self._base_tiles = 0
        self._spent_jobs: set[str] = set()
        """Jobs whose shard reached ``max_steps`` without a win under ``_spent_parent``."""
        self._spent_parent = ""
        self.shard_nonce = 0
        """The nonce the next template asks for; bumped whenever a shard is spent, never reused."""

    def _dataset(self, dataset_id: str) -> Dataset:
        if dataset_id not in self._datasets:
            builtin = digits()
            if builtin.id.hex() == dataset_id:
                self._datasets[dataset_id] = builtin
            else:
                self._datasets[dataset_id] = Dataset.decode(self.client.get_bytes(f"/api/datasets/{dataset_id}"))
        return self._datasets[dataset_id]

    def _session_for(self, template: dict[str, Any], preset: Preset, tip_moved: bool) -> Miner:
        key = (template["job_id"], template["start_state_hash"], int(template.get("shard_nonce", 0)))
        max_steps = template["max_steps"]
        # A finishing job (fewer steps left than a block may claim) starts its shard over under a new
        # tip: its draws are the scarce thing, and a new seed gives every one of them back.
        restart = tip_moved and max_steps < preset.pouw.max_steps_per_block
        if (self._session is not None and self._session_key == key and not restart
                and self._session.steps < max_steps):
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
        """A template for the best job not spent under the current tip, in shard ``shard_nonce``. When
        the node has no job outside the spent ones (it answers 409), the exclusions are dropped: the
        best job is mined again under the (already bumped) nonce, a fresh shard."""
        tip = self.client.get_json("/api/status")["tip"]
        if tip != self._spent_parent:
            self._spent_jobs.clear()
            self._spent_parent = tip
        query = f"/api/mining/template?address={self.address}&nonce={self.shard_nonce}"
        if self.job:
            query += f"&job={self.job}"
        elif self._spent_jobs:
            try:
                template = self.client.get_json(query + "&exclude=" + ",".join(sorted(self._spent_jobs)))
            except MinerError as exc:
                if "409" not in str(exc):
                    raise
                self.report(self.stats, "every job's shard is spent under this tip; "
                                        f"next shard (nonce {self.shard_nonce}) of the best job")
                self._spent_jobs.clear()
            else:
                return self._checked_parent(template)
        return self._checked_parent(self.client.get_json(query))

    def _checked_parent(self, template: dict[str, Any]) -> dict[str, Any]:
        if template["parent_hash"] != self._spent_parent:  # the tip moved between the two calls
            self._spent_jobs.clear()
            self._spent_parent = template["parent_hash"]
        return template

    def run(self, max_blocks: int | None = None, should_stop: Callable[[], bool] = lambda: False) -> MinerStats:
        last_parent = ""
        while not should_stop() and (max_blocks is None or self.stats.blocks_found < max_blocks):
            template = self.template()
            preset = get_preset(template["preset"])
            header = Header.decode(bytes.fromhex(template["header"]))
            sigma = header.lottery_seed
            if header.hash.hex() != template["template_id"]:
                raise MinerError("template id does not match its header")
            if header.shard_nonce != self.shard_nonce:
                raise MinerError(f"template is for shard nonce {header.shard_nonce}, asked {self.shard_nonce}")
            template["shard_nonce"] = header.shard_nonce
            template["trajectory_seed"] = header_trajectory_seed(header).hex()  # τ of this header's shard
            if "max_steps" not in template:  # a node before job-end templates: the job says it
                template["steps_left"] = template["job"]["steps_left"]
                template["max_steps"] = min(template["steps_left"], preset.pouw.max_steps_per_block)
            max_steps = template["max_steps"]
            if not isinstance(max_steps, int) or not 1 <= max_steps <= preset.pouw.max_steps_per_block:
                raise MinerError(f"template allows {max_steps!r} steps")
            session = self._session_for(template, preset, tip_moved=template["parent_hash"] != last_parent)
            last_parent = template["parent_hash"]
            self.stats.height = template["height"]
            self.stats.job = template["job"]["name"] or template["job_id"][:16]
            self.stats.steps_left = template["steps_left"]
            self.stats.shard_nonce = header.shard_nonce
            fetched = time.monotonic()
            last_poll = fetched
            while not should_stop():
                budget = min(STEPS_PER_ROUND, max_steps - session.steps)
                result = session.mine(sigma, header.target, budget, self._progress) if budget > 0 else None
                if result is not None:  # the winning step reports no progress: count it here
                    self.stats.steps = self._base_steps + session.steps
                    self.stats.macs = self._base_macs + session.macs
                    self.stats.tiles = self._base_tiles + session.tiles
                    self._submit(template, result)
                    self._session = None
                    break
                if session.steps >= max_steps:
                    self.shard_nonce += 1
                    if max_steps < preset.pouw.max_steps_per_block:
                        self._spent_jobs.add(template["job_id"])
                        then = "next job until the tip moves"
                    else:
                        then = f"next shard, nonce {self.shard_nonce}"
                    self.report(self.stats, f"shard {header.shard_nonce} of {self.stats.job} reached its "
                                            f"{max_steps} steps ({self.stats.steps_left} left in the job) "
                                            f"without a win; {then}")
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
            "proof": claim.proof.hex(), "work": result.work_bytes.hex(), "prefix_root": claim.prefix_root.hex(),
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
            self.stats.rejections[str(answer.get("reason"))] += 1
            self.report(self.stats, f"block rejected: {answer.get('reason')}: {answer.get('detail')}")
