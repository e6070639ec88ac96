"""Templates of a job that is ending, and the count of every mined submission by outcome and reason."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient

from chain.state import iter_jobs
from chain.types import JobSpec, JobSubmit
from node.api import MAX_EXCLUDED_JOBS
from node.chain_service import ChainService
from tests.node.harness import mine_block
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER = PrivateKey(b"\x05" * 32)
ADDRESS = encode_address(MINER.address)
JOB_STEPS = 5


async def submit_job(service: ChainService) -> str:
    spec = JobSpec(dims=(64, 64), dataset_id=service.preset.builtin_dataset().id, batch_size=64, lr_shift=8,
                   total_steps=JOB_STEPS, fee_per_step=1_000)
    tx = sign_tx(MINER, JobSubmit(chain_id=service.preset.chain_id, nonce=0, fee=20_000, spec=spec, name="five"))
    await service.submit_tx(tx)
    await mine_block(service, MINER)
    return next(job_id.hex() for job_id, job in iter_jobs(service.db.state) if job.name == "five")


def submission_counts(metrics: str) -> dict[str, int]:
    prefix = "pouw_mining_submissions_total{"
    return {line[len(prefix):line.index("}")]: int(float(line.rsplit(" ", 1)[1]))
            for line in metrics.splitlines() if line.startswith(prefix)}


async def test_templates_say_steps_left_and_skip_spent_jobs(
        client: tuple[TestClient, ChainService]) -> None:  # type: ignore[type-arg]
    http, service = client
    await mine_block(service, MINER)
    job_id = await submit_job(service)
    cap = service.preset.pouw.max_steps_per_block

    best = await (await http.get(f"/api/mining/template?address={ADDRESS}")).json()
    assert best["job_id"] == job_id  # it pays; the built-in job does not
    assert best["steps_left"] == JOB_STEPS and best["max_steps"] == JOB_STEPS
    assert best["job"]["steps_left"] == JOB_STEPS

    # A miner with no draw left on the job asks for the next one: the built-in job, open-ended.
    builtin = await (await http.get(f"/api/mining/template?address={ADDRESS}&exclude={job_id}")).json()
    assert builtin["job"]["name"] == "digits"
    assert builtin["steps_left"] == 2**64 - 1 - builtin["job"]["steps_done"]  # never runs dry (u64 steps_done)
    assert builtin["max_steps"] == cap

    # Nothing left: a 409 the miner understands as "wait for the tip"; bad lists are a 400.
    both = await http.get(f"/api/mining/template?address={ADDRESS}&exclude={job_id},{builtin['job_id']}")
    assert both.status == 409 and "no active job" in (await both.json())["error"]
    for bad in ("xyz", ",".join([job_id] * (MAX_EXCLUDED_JOBS + 1))):
        answer = await http.get(f"/api/mining/template?address={ADDRESS}&exclude={bad}")
        assert answer.status == 400, bad


async def test_every_submission_is_counted_by_outcome_and_reason(
        client: tuple[TestClient, ChainService], caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[type-arg]
    http, service = client
    await mine_block(service, MINER)
    job_id = await submit_job(service)
    template = await (await http.get(f"/api/mining/template?address={ADDRESS}&job={job_id}")).json()
    work = {"template_id": template["template_id"], "final_state_hash": "11" * 32, "trajectory_root": "22" * 32,
            "proof": "", "work": ""}

    caplog.set_level(logging.WARNING, logger="pouw.node.mining")
    # One step more than the job has left: the state transition refuses it.
    over = await http.post("/api/mining/submit", json={**work, "steps": JOB_STEPS + 1})
    assert over.status == 400 and (await over.json())["reason"] == "bad-job-progress"
    # Within the job, but no proof: the seal check refuses it.
    junk = await http.post("/api/mining/submit", json={**work, "steps": 1})
    assert junk.status == 400 and (await junk.json())["reason"] == "bad-seal"
    unknown = await http.post("/api/mining/submit", json={**work, "template_id": "33" * 32, "steps": 1})
    assert unknown.status == 400
    garbage = await http.post("/api/blocks", json={"block": "00" * 40})
    assert garbage.status == 400
    builtin = await (await http.get(f"/api/mining/template?address={ADDRESS}&exclude={job_id}")).json()
    await mine_block(service, MINER, job_id=bytes.fromhex(builtin["job_id"]))  # the tip moves: stale now
    stale = await http.post("/api/mining/submit", json={**work, "steps": 1})
    assert stale.status == 409 and (await stale.json())["status"] == "stale"

    counts = submission_counts(await (await http.get("/metrics")).text())
    assert counts == {
        'outcome="accepted",reason=""': 0,
        'outcome="rejected",reason="bad-job-progress"': 1,
        'outcome="rejected",reason="bad-seal"': 1,
        'outcome="rejected",reason="malformed"': 1,
        'outcome="rejected",reason="trailing-bytes"': 1,
        'outcome="stale",reason="stale"': 1,
    }
    lines = [r.getMessage() for r in caplog.records if r.name == "pouw.node.mining"]
    assert len(lines) == 4 and "bad-job-progress" in lines[0] and "bad-seal" in lines[1]
