"""``job download``'s read of a job's model: the view and the model are two requests, and a block may
train the job between them; the pair is read again, and only a hash that never matches is an error."""

from __future__ import annotations

from typing import Any

import pytest

from consensus.presets import REGTEST_PRESET, model_config
from pouw.model import init_state
from wallet.cli import MODEL_FETCH_TRIES, NodeError, _model_file

SPEC = {"dims": [64, 64], "dataset_id": REGTEST_PRESET.builtin_dataset().id.hex(), "batch_size": 64,
        "lr_shift": 8, "total_steps": 100, "fee_per_step": 1}


class MovingNode:
    """A node whose job advances one state each time its model is read (a block right after each
    view); a lying one shows a model hash that no state has."""

    def __init__(self, lie: bool = False) -> None:
        from chain.types import JobSpec

        spec = JobSpec(dims=(64, 64), dataset_id=bytes.fromhex(SPEC["dataset_id"]), batch_size=64, lr_shift=8,
                       total_steps=100, fee_per_step=1)
        self.states = [init_state(model_config(spec), bytes([i]) * 8) for i in range(MODEL_FETCH_TRIES + 2)]
        self.current = 0
        self.lie = lie
        self.model_reads = 0

    def job(self, job_id: str) -> dict[str, Any]:
        shown = bytes(32).hex() if self.lie else self.states[self.current].hash().hex()
        return {"job_id": job_id, "status": "active", "spec": SPEC, "model_hash": shown}

    def request(self, path: str) -> bytes:
        if path.endswith("/model"):
            self.model_reads += 1
            self.current += 1  # a block trained the job right after the view was read
            return self.states[self.current].encode()
        return REGTEST_PRESET.builtin_dataset().encode()

    def status(self) -> dict[str, Any]:
        return {"chain_id": REGTEST_PRESET.chain_id, "preset": "regtest"}


def test_a_job_trained_between_the_view_and_the_model_is_read_again() -> None:
    node = MovingNode()
    model, _ = _model_file(node, "ab" * 32)  # type: ignore[arg-type]
    assert model.state == node.states[1] and node.model_reads == 1


def test_a_node_whose_model_never_matches_its_view_is_an_error() -> None:
    node = MovingNode(lie=True)
    with pytest.raises(NodeError, match="hash is not the job's"):
        _model_file(node, "ab" * 32)  # type: ignore[arg-type]
    assert node.model_reads == MODEL_FETCH_TRIES
