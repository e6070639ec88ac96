"""The mining loop near a job's end, against a scripted node: it never runs a shard past the
template's ``max_steps``, hands a spent finishing job's turn to the next job (``exclude=``) until the
tip moves, starts the next shard (next ``nonce=``) when a shard is spent at the block cap or every
job is spent, and its status line counts accepted / stale / rejected and shows the shard nonce."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from chain.builder import make_header
from chain.types import Header, JobSpec
from consensus.presets import REGTEST_PRESET, model_config
from consensus.seal import header_trajectory_seed
from node import miner as miner_module
from node.miner import MinerError, MiningLoop
from node.miner_cli import Reporter
from pouw.backends import get_backend
from pouw.model import init_state
from pouw.params import target_for_work
from wallet.address import encode_address
from wallet.keys import PrivateKey

KEY = PrivateKey(b"\x09" * 32)
ADDRESS = encode_address(KEY.address)
SPEC = JobSpec(dims=(64, 64), dataset_id=REGTEST_PRESET.builtin_dataset().id, batch_size=64, lr_shift=8,
               total_steps=1_000, fee_per_step=1)
CONFIG = model_config(SPEC)
EASY = target_for_work(REGTEST_PRESET.pouw, CONFIG.macs_per_step())  # about one win a step


class ScriptedNode:
    """Two jobs: ``ending`` (3 steps left, never wins: target 0) and ``other`` (wins fast). A job's
    target may depend on the shard nonce (``nonce_targets``)."""

    def __init__(self, other_target: int = EASY) -> None:
        self.tip = "aa" * 32
        self.jobs = {"11" * 32: ("ending", 3, 0), "22" * 32: ("other", 1_000, other_target)}
        self.template_queries: list[dict[str, list[str]]] = []
        self.submissions: list[dict[str, Any]] = []
        self.answer = "accepted"
        self.status_calls = 0
        self.nonce_targets: dict[int, int] = {}
        self.cap = REGTEST_PRESET.pouw.max_steps_per_block

    def get_json(self, path: str) -> dict[str, Any]:
        url = urlparse(path)
        if url.path == "/api/status":
            self.status_calls += 1
            return {"tip": self.tip}
        query = parse_qs(url.query)
        self.template_queries.append(query)
        excluded = set(query.get("exclude", [""])[0].split(","))
        nonce = int(query.get("nonce", ["0"])[0])
        for job_id, (name, left, target) in self.jobs.items():
            if job_id not in excluded:
                return self.template(job_id, name, left, self.nonce_targets.get(nonce, target), nonce)
        raise MinerError("node answered 409: no active job to mine outside the excluded ones")

    def template(self, job_id: str, name: str, left: int, target: int, nonce: int) -> dict[str, Any]:
        genesis, _ = REGTEST_PRESET.genesis()
        start = init_state(CONFIG, bytes.fromhex(job_id))
        header = make_header(parent=genesis.header, parent_hash=bytes.fromhex(self.tip), timestamp=1, target=target,
                             miner=KEY.address, job_id=bytes.fromhex(job_id), start_state_hash=start.hash(), txs=(),
                             spec=SPEC, shard_nonce=nonce)
        return {
            "template_id": header.hash.hex(), "height": 1, "parent_hash": self.tip, "header": header.encode().hex(),
            "job_id": job_id, "job": {"name": name, "spec": {"dims": list(SPEC.dims), "batch_size": 64,
                                                             "lr_shift": 8, "dataset_id": SPEC.dataset_id.hex()}},
            "start_state_hash": start.hash().hex(),
            "shard_nonce": nonce, "trajectory_seed": header_trajectory_seed(header).hex(),
            "preset": "regtest", "steps_left": left, "max_steps": min(left, self.cap),
        }

    def get_bytes(self, path: str) -> bytes:
        job_id = path.split("/")[3]
        return init_state(CONFIG, bytes.fromhex(job_id)).encode()

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.submissions.append(body)
        if self.answer == "accepted":
            return {"status": "accepted", "height": 1, "hash": "cc" * 32}
        return {"status": "invalid", "reason": "bad-seal", "detail": "scripted"}


def loop_for(node: ScriptedNode) -> tuple[MiningLoop, list[str]]:
    events: list[str] = []
    loop = MiningLoop(node, ADDRESS, get_backend("cpu"),  # type: ignore[arg-type]
                      report=lambda stats, event: events.append(event) if event else None)
    return loop, events


def test_a_spent_shard_hands_the_miner_to_the_next_job() -> None:
    node = ScriptedNode()
    loop, events = loop_for(node)
    stats = loop.run(max_blocks=1)
    assert stats.blocks_found == 1
    # The ending job's shard ran its 3 steps and not one more; then the other job was mined.
    assert any("reached its 3 steps" in e for e in events), events
    (submitted,) = node.submissions
    assert 1 <= submitted["steps"] and node.template_queries[-1]["exclude"] == ["11" * 32]
    assert stats.steps == 3 + submitted["steps"]


def test_every_job_spent_mines_the_next_shard_instead_of_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(miner_module, "TIP_POLL_SECONDS", 0.01)
    node = ScriptedNode(other_target=0)
    node.jobs["22" * 32] = ("other", 2, 0)  # also ending, also never winning
    node.nonce_targets[2] = EASY  # the third shard wins
    loop, events = loop_for(node)
    stats = loop.run(max_blocks=1)
    assert stats.blocks_found == 1
    assert any("next shard (nonce 2) of the best job" in e for e in events), events
    nonces = [int(q["nonce"][0]) for q in node.template_queries]
    # nonce 0: ending (3 steps, spent); nonce 1: other (2 steps, spent); every job excluded: 409;
    # nonce 2 without exclusions: the best job again, a fresh shard from its start state, wins.
    assert nonces == [0, 1, 2, 2], nonces
    assert node.template_queries[2]["exclude"] == [",".join(sorted(["11" * 32, "22" * 32]))]
    assert "exclude" not in node.template_queries[3]
    (submitted,) = node.submissions
    assert stats.steps == 3 + 2 + submitted["steps"] and submitted["steps"] <= 3
    header = Header.decode(bytes.fromhex(submitted_template(node, submitted)["header"]))
    assert header.shard_nonce == 2


def test_a_shard_spent_at_the_block_cap_continues_under_the_next_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """The liveness rule: a job with more steps left than a block may claim, whose shard reaches the
    cap without a win, is mined on under the next shard nonce (no exclusion, no waiting)."""
    small = replace(REGTEST_PRESET, pouw=replace(REGTEST_PRESET.pouw, max_steps_per_block=4))
    monkeypatch.setattr(miner_module, "get_preset", lambda name: small)
    node = ScriptedNode(other_target=0)
    del node.jobs["11" * 32]
    node.cap = 4
    node.nonce_targets[1] = EASY
    loop, events = loop_for(node)
    stats = loop.run(max_blocks=1)
    assert stats.blocks_found == 1 and any("next shard, nonce 1" in e for e in events), events
    assert [int(q["nonce"][0]) for q in node.template_queries] == [0, 1]
    assert all("exclude" not in q for q in node.template_queries)
    (submitted,) = node.submissions
    assert stats.steps == 4 + submitted["steps"]
    assert Header.decode(bytes.fromhex(submitted_template(node, submitted)["header"])).shard_nonce == 1
    assert "shard 1 |" in Reporter(tty=False).line(stats)


def submitted_template(node: ScriptedNode, submitted: dict[str, Any]) -> dict[str, Any]:
    """The template a submission names (rebuilt from the scripted node's answers)."""
    for query in node.template_queries:
        nonce = int(query.get("nonce", ["0"])[0])
        excluded = set(query.get("exclude", [""])[0].split(","))
        for job_id, (name, left, target) in node.jobs.items():
            if job_id in excluded:
                continue
            template = node.template(job_id, name, left, node.nonce_targets.get(nonce, target), nonce)
            if template["template_id"] == submitted["template_id"]:
                return template
            break
    raise AssertionError("no template matches the submission")


def test_status_line_counts_accepted_stale_and_rejected() -> None:
    node = ScriptedNode()
    node.answer = "rejected"
    loop, _ = loop_for(node)
    loop.run(max_blocks=1, should_stop=lambda: len(node.submissions) >= 2)
    stats = loop.stats
    assert stats.blocks_found == 0 and stats.blocks_rejected == 2 and stats.rejections == {"bad-seal": 2}
    stats.blocks_stale = 1
    stats.steps_left = 5
    line = Reporter(tty=False).line(stats)
    assert "0 accepted, 1 stale, 2 rejected (bad-seal 2)" in line and "(5 left)" in line
    stats.steps_left = 2**32 - 1
    assert "(open-ended)" in Reporter(tty=False).line(stats)
