"""The HTTP API: happy paths, and a bounded fuzz of bad requests that must never get a 5xx."""

from __future__ import annotations

import json
import random

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from chain.types import COIN, Transfer
from node.chain_service import ChainService
from tests.functional.framework import test_seed
from tests.node.harness import mine_block
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER = PrivateKey(b"\x03" * 32)
OTHER = PrivateKey(b"\x04" * 32)


async def test_status_blocks_accounts_and_tx(client: tuple[TestClient, ChainService]) -> None:  # type: ignore[type-arg]
    http, service = client
    await mine_block(service, MINER)
    status = await (await http.get("/api/status")).json()
    assert status["height"] == 1 and status["preset"] == "regtest"
    block = await (await http.get("/api/blocks/1")).json()
    assert block["miner"] == encode_address(MINER.address)
    assert block["tile"] is not None and block["seal"]["steps"] >= 1
    by_hash = await (await http.get(f"/api/blocks/{block['hash']}")).json()
    assert by_hash["height"] == 1
    raw = await (await http.get("/api/blocks/1/raw")).read()
    assert len(raw) == block["size"]

    tx = sign_tx(MINER, Transfer(chain_id=service.preset.chain_id, nonce=0, fee=10_000, to=OTHER.address,
                                 amount=COIN, memo=b"hi"))
    answer = await http.post("/api/tx", json={"tx": tx.encode().hex()})
    assert answer.status == 200, await answer.text()
    pending = await (await http.get(f"/api/tx/{tx.txid.hex()}")).json()
    assert pending["status"] == "pending"
    account = await (await http.get(f"/api/accounts/{encode_address(MINER.address)}")).json()
    assert account["next_nonce"] == 1 and len(account["pending"]) == 1
    # The same tx again is refused with a reason, not a crash.
    again = await http.post("/api/tx", json={"tx": tx.encode().hex()})
    assert again.status == 400 and (await again.json())["reason"] == "already-known"
    await mine_block(service, MINER)
    confirmed = await (await http.get(f"/api/tx/{tx.txid.hex()}")).json()
    assert confirmed["status"] == "confirmed" and confirmed["height"] == 2
    other = await (await http.get(f"/api/accounts/{encode_address(OTHER.address)}")).json()
    assert other["balance"] == COIN and other["history"][0]["memo"] == "hi"

    jobs = (await (await http.get("/api/jobs")).json())["jobs"]
    digits = next(j for j in jobs if j["name"] == "digits")
    detail = await (await http.get(f"/api/jobs/{digits['job_id']}")).json()
    assert detail["steps_done"] > 0 and detail["history"][0]["steps"] == 0
    model = await http.get(f"/api/jobs/{digits['job_id']}/model?format=npz")
    assert model.status == 200 and (await model.read())[:2] == b"PK"
    scraped = await http.get("/metrics")
    assert scraped.headers["Content-Type"] == CONTENT_TYPE_LATEST and CONTENT_TYPE_LATEST.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(await scraped.text())}
    assert families["pouw_height"].samples[0].value == 2
    expected = {
        "pouw_build_info", "process_cpu_seconds", "process_resident_memory_bytes", "python_info", "pouw_height",
        "pouw_tip_timestamp_seconds", "pouw_tip_age_seconds", "pouw_peers", "pouw_best_peer_height",
        "pouw_sync_progress_ratio", "pouw_mempool_txs", "pouw_mempool_bytes", "pouw_blocks_accepted",
        "pouw_blocks_rejected", "pouw_tx_submissions", "pouw_work_submissions", "pouw_block_validation_seconds",
        "pouw_verification_seconds", "pouw_useful_steps", "pouw_useful_macs", "pouw_useful_steps_per_second",
        "pouw_useful_macs_per_second", "pouw_jobs_active", "pouw_target_log2",
    }
    assert expected <= families.keys(), expected - families.keys()
    assert families["pouw_useful_steps"].samples[0].value == detail["steps_done"]
    assert any(s.labels.get("result") == "accepted" for s in families["pouw_tx_submissions"].samples)
    stage_counts = {s.labels["stage"]: s.value for s in families["pouw_verification_seconds"].samples
                    if s.name == "pouw_verification_seconds_count"}
    assert stage_counts.get("connect", 0) >= 2  # each imported block's stage 5 is timed


async def test_template_and_submit_errors(client: tuple[TestClient, ChainService]) -> None:  # type: ignore[type-arg]
    http, _ = client
    bad = await http.get("/api/mining/template?address=pw1notanaddress")
    assert bad.status == 400
    good = await http.get(f"/api/mining/template?address={encode_address(MINER.address)}")
    template = await good.json()
    assert template["height"] == 1 and len(template["header"]) > 100
    stale = await http.post("/api/mining/submit", json={
        "template_id": "00" * 32, "steps": 1, "final_state_hash": "00" * 32, "trajectory_root": "00" * 32,
        "proof": "", "work": ""})
    assert stale.status == 400


BAD_BODIES: list[bytes] = [
    b"", b"{", b"[]", b"null", b"42", b'"x"', b'{"tx": 5}', b'{"tx": "zz"}', b'{"tx": "00"}',
    b'{"tx": "' + b"ab" * 300 + b'"}', b"\xff\xfe\x00", b'{"block": []}', b'{"template_id": 7}',
    json.dumps({"template_id": "00" * 32, "steps": -1}).encode(),
    json.dumps({"template_id": "00" * 32, "steps": True, "final_state_hash": 1}).encode(),
]
PATHS = ["/api/tx", "/api/blocks", "/api/mining/submit"]
GET_PATHS = [
    "/api/blocks/99999", "/api/blocks/zz", "/api/blocks/" + "f" * 64, "/api/tx/123", "/api/tx/" + "0" * 64,
    "/api/accounts/pw1", "/api/accounts/" + "x" * 500, "/api/jobs/00", "/api/jobs/" + "0" * 64 + "/model",
    "/api/datasets/" + "0" * 64, "/api/blocks?limit=-5", "/api/blocks?limit=abc&before=zz",
    "/api/mining/template", "/api/mining/template?address=&job=xyz", "/nope", "/api/../../etc/passwd",
    "/static/../../setup.cfg", "/api/blocks/1/raw/extra",
]


async def test_fuzz_never_5xx(client: tuple[TestClient, ChainService]) -> None:  # type: ignore[type-arg]
    http, _ = client
    rng = random.Random(test_seed())
    seen: list[int] = []
    for body in BAD_BODIES:
        for path in PATHS:
            response = await http.post(path, data=body, headers={"Content-Type": "application/json"})
            seen.append(response.status)
            assert response.status < 500, (path, body[:40], await response.text())
            assert "Traceback" not in await response.text()
    for path in GET_PATHS:
        response = await http.get(path)
        assert 400 <= response.status < 500, (path, response.status)
    for _ in range(150):  # random junk of random sizes, methods and paths
        path = rng.choice(PATHS + GET_PATHS + ["/api/" + "".join(rng.choice("abc/%?=&") for _ in range(12))])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        method = rng.choice(["GET", "POST", "PUT", "DELETE"])
        try:
            response = await http.request(method, path, data=body)
        except aiohttp.ClientError:
            continue  # a path the client library itself refuses to send
        assert response.status < 500, (method, path, response.status)
    huge = await http.post("/api/tx", data=b"{" + b" " * (2 << 20) + b"}", headers={"Content-Type": "application/json"})
    assert huge.status == 413
    assert (await http.get("/api/status")).status == 200  # still serving
    assert 400 in seen
