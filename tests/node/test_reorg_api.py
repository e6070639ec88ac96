"""A heavier competing branch, posted through the HTTP API, replaces the tip; balances, job state and
the mempool follow. (Switching back and forth is covered at the store level in tests/chain_store.)"""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from chain.state import get_job
from chain.types import COIN, Transfer
from consensus.presets import REGTEST_PRESET
from node.api import make_app
from node.api_security import API_SECURITY
from tests.node.harness import mine_block, start_service
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

ALICE = PrivateKey(b"\x05" * 32)
BOB = PrivateKey(b"\x06" * 32)
CAROL = PrivateKey(b"\x07" * 32)
DIGITS = REGTEST_PRESET.builtin_job().job_id


async def test_heavier_branch_through_the_api(tmp_path: Path) -> None:
    a = await start_service(tmp_path / "a")
    b = await start_service(tmp_path / "b")
    try:
        # Branch A: two blocks by Alice, the second carrying her transfer to Carol.
        await mine_block(a, ALICE)
        tx = sign_tx(ALICE, Transfer(chain_id=REGTEST_PRESET.chain_id, nonce=0, fee=10_000, to=CAROL.address,
                                     amount=3 * COIN, memo=b""))
        await a.submit_tx(tx)
        await mine_block(a, ALICE)
        assert a.balance(CAROL.address)[0] == 3 * COIN
        # Branch B: three blocks by Bob (same target, so more work).
        blocks_b = [await mine_block(b, BOB) for _ in range(3)]

        app = make_app(a)
        async with TestClient(TestServer(app), headers=app[API_SECURITY].client_headers()) as http:
            for block in blocks_b:
                answer = await http.post("/api/blocks", json={"block": block.encode().hex()})
                assert answer.status == 200, await answer.text()
            status = await (await http.get("/api/status")).json()
            assert status["tip"] == blocks_b[-1].hash.hex() and status["height"] == 3
            alice = await (await http.get(f"/api/accounts/{encode_address(ALICE.address)}")).json()
            bob = await (await http.get(f"/api/accounts/{encode_address(BOB.address)}")).json()
        subsidy = REGTEST_PRESET.subsidy(1)
        assert alice["balance"] == 0 and bob["balance"] == 3 * subsidy
        assert a.balance(CAROL.address)[0] == 0
        # The job's state follows the winning branch.
        job_a, job_b = get_job(a.db.state, DIGITS), get_job(b.db.state, DIGITS)
        assert job_a == job_b
        # Alice's transfer fell off with her branch; it cannot be re-admitted (her rewards vanished).
        assert tx.txid not in a.mempool
        # State equals B's byte for byte.
        assert list(a.db.state.items()) == list(b.db.state.items())
    finally:
        await a.stop()
        await b.stop()
