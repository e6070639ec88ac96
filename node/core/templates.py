"""Mining: which job to train, block templates for miners, and sealing a miner's result into a block.

A template fixes the whole header (parent, time, target, job, transactions, and the shard nonce the
miner asked for); the miner decides the seal. Templates are kept (bounded) by id so ``submit_work``
can find the header it mined.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from chain.builder import make_header, seal_block
from chain.errors import InvalidBlock, PouwError, Reason
from chain.state import JobRecord, StateReader, get_job, iter_jobs
from chain.types import Block, JobCancel
from consensus.mempool import Mempool
from consensus.pouw_seal import PouwSealVerifier, prefix_root_of_work
from consensus.presets import Preset, model_config
from consensus.seal import NoProofSealVerifier
from consensus.validation import expected_target
from node.core.header_tree import HeaderTree
from node.core.types import Template
from store.chaindb import ChainDB

MAX_TEMPLATES = 64


class TemplateBuilder:
    """Builds templates on the head and seals mining results. Attach a ChainDB before use."""

    def __init__(self, preset: Preset, mempool: Mempool, headers: HeaderTree,
                 clock: Callable[[], float] = time.time) -> None:
        self.preset = preset
        self.rules = preset.chain_rules
        self.mempool = mempool
        self.headers = headers
        self.clock = clock
        self._templates: OrderedDict[bytes, Template] = OrderedDict()
        self._db: ChainDB | None = None
        self._verifier: PouwSealVerifier | NoProofSealVerifier = NoProofSealVerifier()

    def attach(self, db: ChainDB, verifier: PouwSealVerifier | NoProofSealVerifier) -> None:
        self._db = db
        self._verifier = verifier

    @property
    def db(self) -> ChainDB:
        if self._db is None:
            raise PouwError("chain service is not started")
        return self._db

    def best_job(self, state: StateReader, exclude: frozenset[bytes] = frozenset()) -> tuple[bytes, JobRecord]:
        """The active job that pays best per MAC (the built-in job when none pays), skipping jobs whose
        owner has a cancel pending: those are left to finish, so the cancel can be mined; and skipping
        ``exclude``, the jobs a miner has no draw left on under this tip (docs/protocol.md Part IV §6.1)."""
        cancelling = {
            tx.body.job_id for txid in self.mempool.txids()
            if (tx := self.mempool.get(txid)) is not None and isinstance(tx.body, JobCancel)
        }
        best: tuple[int, int, bytes, JobRecord] | None = None
        for job_id, job in iter_jobs(state):
            if not job.active or job_id in cancelling or job_id in exclude:
                continue
            macs = model_config(job.spec).macs_per_step()
            # compare fee_per_step / macs exactly: a/b > c/d  <=>  a*d > c*b
            key = (job.spec.fee_per_step, macs)
            if best is None or key[0] * best[1] > best[0] * key[1]:
                best = (key[0], key[1], job_id, job)
        if best is None:
            raise PouwError("no active job to mine" + (" outside the excluded ones" if exclude else ""))
        return best[2], best[3]

    def build(self, miner: bytes, job_id: bytes | None, exclude: frozenset[bytes] = frozenset(),
              shard_nonce: int = 0) -> Template:
        """A template on the head for ``miner``, training ``job_id`` (the best job outside ``exclude``
        when None) in the miner's shard ``shard_nonce`` (docs/protocol.md Part IV §6.1). It says how
        many steps the job has left and the most a seal on it may claim."""
        head = self.db.head
        parent = self.db.get_header(head.hash)
        if parent is None:
            raise PouwError("head header missing")
        state = self.db.state
        if job_id is None:
            job_id, job = self.best_job(state, exclude)
        else:
            found = get_job(state, job_id)
            if found is None or not found.active:
                raise InvalidBlock(Reason.JOB_NOT_ACTIVE if found else Reason.UNKNOWN_JOB, job_id.hex())
            job = found
        ctx = self.headers.header_context(head.hash)
        now = int(self.clock())
        # A cancel of the job being mined could meet a job this very block finishes: leave it out.
        txs = tuple(
            tx for tx in self.mempool.select(state, self.rules.max_block_txs, self.preset.max_block_bytes // 2)
            if not (isinstance(tx.body, JobCancel) and tx.body.job_id == job_id)
        )
        header = make_header(
            parent=parent, parent_hash=head.hash, timestamp=max(now, ctx.median_time_past + 1),
            target=expected_target(self.preset, ctx, self.headers.genesis.header.target), miner=miner,
            job_id=job_id, start_state_hash=job.state_hash, txs=txs, spec=job.spec, shard_nonce=shard_nonce,
        )
        template = Template(header=header, txs=txs, job=job, parent_hash=head.hash, created=time.monotonic(),
                            max_steps_per_block=self.preset.pouw.max_steps_per_block)
        self._templates[template.template_id] = template
        while len(self._templates) > MAX_TEMPLATES:
            self._templates.popitem(last=False)
        return template

    def job_start_model(self, job_id: bytes) -> bytes:
        """The encoded model the job's next block trains from."""
        job = get_job(self.db.state, job_id)
        if job is None:
            raise InvalidBlock(Reason.UNKNOWN_JOB, job_id.hex())
        if isinstance(self._verifier, PouwSealVerifier):
            return self._verifier.start_state(job_id, job)
        raise PouwError("this node runs without proofs")

    def seal(self, template_id: bytes, steps: int, final_state_hash: bytes, trajectory_root: bytes,
             proof: bytes, work: bytes, prefix_root: bytes | None = None) -> Block | None:
        """The block a miner's result makes of a template; None when the head moved past its parent."""
        template = self._templates.get(template_id)
        if template is None:
            raise InvalidBlock(Reason.MALFORMED, "unknown or expired template")
        if self.db.head.hash != template.parent_hash:
            return None
        if prefix_root is None:  # derived from the work; undecodable work fails the seal check later
            try:
                prefix_root = prefix_root_of_work(work)
            except InvalidBlock:
                prefix_root = bytes(32)
        return seal_block(
            self.db.state, template.header, template.txs, self.rules, steps=steps,
            final_state_hash=final_state_hash, trajectory_root=trajectory_root, proof=proof, work=work,
            prefix_root=prefix_root,
        )
