"""The node's model index: job models by hash (content-addressed, written when a block carrying
the model arrives) and each job's evaluation history. Node-side indexes, not consensus: both are
rebuilt from blocks if lost. Also serves published datasets' bytes to the verifier and the API.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from chain.encoding import pack, unpack
from chain.errors import InvalidBlock, Reason, ValidationError
from chain.hashing import tagged_hash
from chain.state import DatasetRecord, JobRecord, get_dataset, get_dataset_part, get_job
from chain.types import Block, DatasetChunk, DatasetPublish, decode_dataset_parts
from consensus.pouw_seal import PouwSealVerifier, builtin_datasets
from consensus.presets import model_config
from consensus.seal import NoProofSealVerifier
from store import schema
from store.chaindb import ChainDB, ImportResult
from store.kv import KeyValueStore

log = logging.getLogger("pouw.node.chain")

ASSEMBLED_CACHE = 2
"""Assembled multi-part datasets kept in memory (each at most 256 MiB, docs/protocol.md Part I §4)."""


class ModelIndex:
    """Job models and evaluations in the node's store. Attach the store and ChainDB before use."""

    def __init__(self) -> None:
        self._store: KeyValueStore | None = None
        self._db: ChainDB | None = None
        self._verifier: PouwSealVerifier | NoProofSealVerifier = NoProofSealVerifier()
        self._initial_evaluations: dict[bytes, tuple[int, int, int]] = {}
        self._assembled: OrderedDict[bytes, bytes] = OrderedDict()
        self._assembled_lock = threading.Lock()

    def attach(self, store: KeyValueStore, db: ChainDB, verifier: PouwSealVerifier | NoProofSealVerifier) -> None:
        self._store = store
        self._db = db
        self._verifier = verifier

    def model_bytes(self, model_hash: bytes) -> bytes | None:
        return self._store.get(schema.model_key(model_hash)) if self._store is not None else None

    def dataset_bytes(self, dataset_id: bytes) -> bytes | None:
        """A published dataset's canonical bytes (``Dataset.encode``), read from the transaction that
        published it; a multi-part dataset is assembled from its parts' transactions (the last
        :data:`ASSEMBLED_CACHE` kept). The id of a dataset part gives that part's bytes."""
        if self._db is None:
            return None
        state = self._db.state
        record = get_dataset(state, dataset_id)
        if record is None:
            part = get_dataset_part(state, dataset_id)
            return self._tx_data(part) if part is not None else None
        data = self._tx_data(record)
        if data is None:
            return None
        parts = decode_dataset_parts(data)
        if parts is None:
            return data
        with self._assembled_lock:
            cached = self._assembled.get(dataset_id)
            if cached is not None:
                self._assembled.move_to_end(dataset_id)
                return cached
        from pouw.datasets import assemble_parts

        pieces = []
        for part_id in parts.part_ids:
            part = get_dataset_part(state, part_id)
            piece = self._tx_data(part) if part is not None else None
            if piece is None:
                return None
            pieces.append(piece)
        assembled = assemble_parts(parts, pieces, record.name).encode()
        del pieces
        with self._assembled_lock:
            self._assembled[dataset_id] = assembled
            while len(self._assembled) > ASSEMBLED_CACHE:
                self._assembled.popitem(last=False)
        return assembled

    def dataset_record_bytes(self, dataset_id: bytes) -> bytes | None:
        """The data of the transaction that published a dataset (or part) as it is on chain: the
        manifest of a multi-part dataset, whose hash is the id (what a client verifies)."""
        if self._db is None:
            return None
        record = get_dataset(self._db.state, dataset_id) or get_dataset_part(self._db.state, dataset_id)
        return self._tx_data(record) if record is not None else None

    def _tx_data(self, record: DatasetRecord) -> bytes | None:
        """The data of the dataset (or part) transaction a record names."""
        if self._db is None or record.txid == bytes(32):
            return None
        where = self._db.tx_location(record.txid)
        block = self._db.get_block(where.block_hash) if where is not None else None
        if block is None or where is None:
            return None
        body = block.txs[where.position].body
        return body.data if isinstance(body, DatasetPublish | DatasetChunk) else None

    def store_model(self, block: Block) -> None:
        """Keep the block's final model (content-addressed; harmless if the block later fails)."""
        if not isinstance(self._verifier, PouwSealVerifier) or not block.work:
            return
        from pouw.proof import WorkData

        try:
            final = WorkData.decode(block.work).final_state
        except ValidationError as exc:
            raise InvalidBlock(Reason.BAD_SEAL, f"work: {exc.detail}") from exc
        if tagged_hash("pouw/model", final) == block.seal.final_state_hash and self._store is not None:
            self._store.put(schema.model_key(block.seal.final_state_hash), final)

    def record_evaluations(self, result: ImportResult) -> None:
        """After the head moved: the evaluation of each newly canonical block's job model."""
        if self._db is None:
            return
        state = self._db.state
        for block in result.new_canonical:
            job = get_job(state, block.header.job_id)
            if job is None or self._store is None:
                continue
            try:
                evaluation = self.evaluate(job)
            except Exception:  # a report, never a reason to fail an import
                log.exception("evaluation of job %s failed", block.header.job_id.hex()[:16])
                continue
            if evaluation is not None:
                correct, total, loss = evaluation
                self._store.put(
                    schema.eval_key(block.header.job_id, block.height),
                    pack([job.steps_done, correct, total, loss]),
                )

    def evaluate(self, job: JobRecord, initial: bool = False) -> tuple[int, int, int] | None:
        """(correct, total, loss) of the job's current model — or of its initial one — on held-out data."""
        if not isinstance(self._verifier, PouwSealVerifier):
            return None
        from pouw.backends import get_backend
        from pouw.datasets import Dataset
        from pouw.evaluate import evaluate
        from pouw.model import ModelState, init_state

        dataset = builtin_datasets().get(job.spec.dataset_id)
        if dataset is None:
            data = self.dataset_bytes(job.spec.dataset_id)
            if data is None:
                return None
            dataset = Dataset.decode(data)
        config = model_config(job.spec)
        if initial:
            state = init_state(config, job.init_seed)
        else:
            raw = self.model_bytes(job.state_hash)
            if raw is None:
                return None
            state = ModelState.decode(raw, config)
        result = evaluate(config, state, dataset, get_backend("cpu"))
        return result.correct, result.total, result.loss

    def job_history(self, job_id: bytes, limit: int = 500) -> list[tuple[int, int, int, int, int]]:
        """(height, steps_done, correct, total, loss) of the job's model: the untrained model at the
        job's creation, then after each block that trained it."""
        job = get_job(self._db.state, job_id) if self._db is not None else None
        if self._store is None or job is None:
            return []
        rows = []
        initial = self._initial_evaluations.get(job_id)
        if initial is None:
            initial = self.evaluate(job, initial=True)
            if initial is not None:
                self._initial_evaluations[job_id] = initial
        if initial is not None:
            rows.append((job.created_height, 0, *initial))
        for key, raw in self._store.iterate(schema.DB_EVAL + job_id):
            height = int.from_bytes(key[-8:], "big")
            steps, correct, total, loss = unpack(raw)
            rows.append((height, steps, correct, total, loss))
        return rows[:1] + rows[1:][-limit:]
