"""The state transition: ``transition(pre, block) -> diff``, a pure function that rejects with a reason.

Order (normative, docs/protocol.md "State transition"):

1. Block shape: at most ``rules.max_block_txs`` transactions, no duplicate txid, ``tx_root`` matches.
2. Job progress: the header's job must exist and be active, its model config (dims, batch size, lr
   shift) must equal the job's spec, ``start_state_hash`` must equal the job's current model hash,
   and ``1 <= seal.steps <= steps left``. The job's record advances (steps done, new model hash) and
   ``fee_per_step * steps`` leaves its escrow (``job_fee_burn`` of it is burned, the rest goes to the
   miner). A job whose budget is spent becomes FINISHED.
3. Transactions in block order, each against the state left by the previous one: chain id, fee
   floor, signature (low-S), nonce (``== account nonce``: a smaller one is a replay, a larger a gap),
   then the kind's own rules (balance, overflow, job ownership...).
4. The miner is credited last with :func:`block_reward` (so it cannot spend its reward inside the
   block that earns it): the subsidy scaled by the useful work the seal proves,
   ``subsidy(height) * min(steps * macs_per_step, W) // W`` with ``W = expected_block_work(target)``
   (zero for a client job paying less than ``min_subsidy_fee_per_mmac``), plus the job pay left after
   the burn, plus the transactions' fees. The unpaid subsidy is never minted.
5. ``apply_block`` additionally checks ``seal.state_root`` against the root of the post-state.

Signature checks can be turned off by a caller that has already verified the block's signatures (the
node does them in a process pool first); nothing else can.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from chain import schema
from chain.crypto import verify_signature
from chain.errors import InvalidBlock, InvalidTransaction, Reason
from chain.rules import ChainRules
from chain.state import (
    EMPTY_ACCOUNT,
    Account,
    DatasetRecord,
    JobRecord,
    JobStatus,
    StateDiff,
    StateReader,
    get_account,
    get_dataset,
    get_dataset_part,
    get_job,
    merge_sorted,
    state_root_of,
)
from chain.types import (
    ZERO_ADDRESS,
    Block,
    DatasetChunk,
    DatasetPublish,
    Header,
    JobCancel,
    JobSpec,
    JobSubmit,
    Seal,
    SignedTx,
    Transfer,
    decode_dataset_parts,
    job_id_of,
    tagged_hash,
    tx_root,
)

U64_MAX = (1 << 64) - 1


class Overlay:
    """Writes buffered over a reader; ``diff`` is what changed. Reads see the writes."""

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        diff = {k: v for k, v in self.writes.items() if k.startswith(prefix)}
        return merge_sorted(self.base.items(prefix), diff)

    def put_account(self, address: bytes, account: Account) -> None:
        key = schema.account_key(address)
        self.writes[key] = None if account == EMPTY_ACCOUNT else account.encode()

    def put_job(self, job_id: bytes, job: JobRecord) -> None:
        self.writes[schema.job_key(job_id)] = job.encode()

    def put_dataset(self, dataset_id: bytes, record: DatasetRecord) -> None:
        self.writes[schema.dataset_key(dataset_id)] = record.encode()

    def put_dataset_part(self, part_id: bytes, record: DatasetRecord) -> None:
        self.writes[schema.dataset_part_key(part_id)] = record.encode()

    def diff(self) -> StateDiff:
        return dict(sorted(self.writes.items()))


def _add(a: int, b: int, what: str) -> int:
    total = a + b
    if total > U64_MAX:
        raise InvalidTransaction(Reason.OVERFLOW, f"{what} would exceed 2^64-1")
    return total


def _debit(account: Account, amount: int) -> Account:
    if account.balance < amount:
        raise InvalidTransaction(
            Reason.INSUFFICIENT_BALANCE, f"balance {account.balance} < {amount}"
        )
    return Account(balance=account.balance - amount, nonce=account.nonce)


def apply_tx(
    state: Overlay, tx: SignedTx, header: Header, rules: ChainRules,
    *, check_signature: bool = True,
) -> int:
    """Apply one transaction to ``state`` in place; returns its fee. Raises InvalidTransaction."""
    body = tx.body
    if body.chain_id != rules.chain_id:
        raise InvalidTransaction(Reason.WRONG_CHAIN_ID, f"chain id {body.chain_id} != {rules.chain_id}")
    required = rules.required_fee(len(tx.encode()))
    if body.fee < required:
        raise InvalidTransaction(Reason.FEE_TOO_LOW, f"fee {body.fee} < {required}")
    if check_signature:
        verify_signature(tx.pubkey, tx.digest, tx.signature)
    sender = tx.sender
    account = get_account(state, sender)
    if body.nonce < account.nonce:
        raise InvalidTransaction(Reason.NONCE_REPLAY, f"nonce {body.nonce} already used")
    if body.nonce > account.nonce:
        raise InvalidTransaction(Reason.NONCE_GAP, f"nonce {body.nonce}, expected {account.nonce}")
    account = _debit(account, body.fee)
    account = Account(balance=account.balance, nonce=account.nonce + 1)

    if isinstance(body, Transfer):
        if body.amount == 0:
            raise InvalidTransaction(Reason.ZERO_AMOUNT, "transfer of zero")
        account = _debit(account, body.amount)
        state.put_account(sender, account)
        recipient = get_account(state, body.to)
        state.put_account(
            body.to,
            Account(balance=_add(recipient.balance, body.amount, "recipient balance"), nonce=recipient.nonce),
        )
    elif isinstance(body, JobSubmit):
        spec = body.spec
        rules.validate_job_spec(spec)
        if spec.total_steps == 0:
            raise InvalidTransaction(Reason.BAD_JOB_SPEC, "a job needs at least one step")
        dataset = get_dataset(state, spec.dataset_id)
        if dataset is None:
            raise InvalidTransaction(Reason.UNKNOWN_DATASET, spec.dataset_id.hex())
        if dataset.n_features and (
            not spec.dims or spec.dims[0] != dataset.n_features or spec.dims[-1] < dataset.n_classes
        ):
            raise InvalidTransaction(
                Reason.BAD_JOB_SPEC,
                f"dims {list(spec.dims)} do not fit a dataset of {dataset.n_features} features and "
                f"{dataset.n_classes} classes",
            )
        escrow = spec.total_steps * spec.fee_per_step
        if escrow > U64_MAX:
            raise InvalidTransaction(Reason.OVERFLOW, "escrow exceeds 2^64-1")
        account = _debit(account, escrow)
        state.put_account(sender, account)
        job_id = job_id_of(tx.txid)
        # Seeded by the including header (fixed before its seal), so the client cannot pick weights.
        init_seed = tagged_hash("pouw/job-init", job_id + header.lottery_seed)
        state.put_job(
            job_id,
            JobRecord(
                owner=sender, spec=spec, name=body.name, escrow=escrow, steps_done=0,
                state_hash=rules.initial_model_hash(spec, init_seed), init_seed=init_seed,
                status=JobStatus.ACTIVE, created_height=header.height, updated_height=header.height,
            ),
        )
    elif isinstance(body, JobCancel):
        job = get_job(state, body.job_id)
        if job is None:
            raise InvalidTransaction(Reason.UNKNOWN_JOB, body.job_id.hex())
        if job.owner != sender:
            raise InvalidTransaction(Reason.NOT_JOB_OWNER, "only the job's owner may cancel it")
        if not job.active:
            raise InvalidTransaction(Reason.JOB_NOT_ACTIVE, f"job status {job.status}")
        account = Account(balance=_add(account.balance, job.escrow, "refund"), nonce=account.nonce)
        state.put_account(sender, account)
        cancelled = _replace_job(job, escrow=0, status=JobStatus.CANCELLED, height=header.height)
        state.put_job(body.job_id, cancelled)
    elif isinstance(body, DatasetPublish):
        dataset_id = body.dataset_id
        if get_dataset(state, dataset_id) is not None:
            raise InvalidTransaction(Reason.DATASET_EXISTS, dataset_id.hex())
        parts = decode_dataset_parts(body.data)
        if parts is None:
            n_features, n_classes = rules.dataset_shape(body.data)
            size = len(body.data)
        else:
            n_features, n_classes, size = parts.n_features, parts.n_classes, assembled_size(state, parts.part_ids,
                                                                                            parts.n_features,
                                                                                            parts.n_classes)
        state.put_account(sender, account)
        state.put_dataset(
            dataset_id,
            DatasetRecord(
                publisher=sender, name=body.name, size=size, n_features=n_features,
                n_classes=n_classes, txid=tx.txid, height=header.height,
            ),
        )
    elif isinstance(body, DatasetChunk):
        part_id = body.part_id
        if get_dataset_part(state, part_id) is not None:
            raise InvalidTransaction(Reason.DATASET_EXISTS, f"part {part_id.hex()}")
        n_features, n_classes = rules.dataset_shape(body.data)
        state.put_account(sender, account)
        state.put_dataset_part(
            part_id,
            DatasetRecord(
                publisher=sender, name="", size=len(body.data), n_features=n_features,
                n_classes=n_classes, txid=tx.txid, height=header.height,
            ),
        )
    else:  # pragma: no cover - the decoder admits no other kind
        raise InvalidTransaction(Reason.MALFORMED, f"unknown transaction kind {type(body).__name__}")
    return body.fee


def assembled_size(state: StateReader, part_ids: tuple[bytes, ...], n_features: int, n_classes: int) -> int:
    """Total bytes of a manifest's parts; each must be on chain already with the manifest's shape."""
    size = 0
    for index, part_id in enumerate(part_ids):
        part = get_dataset_part(state, part_id)
        if part is None:
            raise InvalidTransaction(Reason.UNKNOWN_DATASET, f"part {index} ({part_id.hex()}) is not on chain")
        if (part.n_features, part.n_classes) != (n_features, n_classes):
            raise InvalidTransaction(
                Reason.BAD_DATASET,
                f"part {index} has {part.n_features} features and {part.n_classes} classes, the manifest "
                f"{n_features} and {n_classes}",
            )
        size += part.size
    return size


def _replace_job(
    job: JobRecord, *, escrow: int, status: int, height: int,
    steps_done: int | None = None, state_hash: bytes | None = None,
) -> JobRecord:
    return JobRecord(
        owner=job.owner, spec=job.spec, name=job.name, escrow=escrow,
        steps_done=job.steps_done if steps_done is None else steps_done,
        state_hash=job.state_hash if state_hash is None else state_hash,
        init_seed=job.init_seed, status=status, created_height=job.created_height,
        updated_height=height,
    )


@dataclass(frozen=True, slots=True)
class Reward:
    """What a block pays its miner, and what it mints and burns (normative, docs/protocol.md §8)."""

    subsidy: int
    """The schedule's full subsidy at the block's height."""
    subsidy_paid: int
    """The part of it the seal's useful work earns (the rest is never minted)."""
    job_released: int
    """What left the job's escrow: ``min(steps * fee_per_step, escrow)``."""
    job_burned: int
    """The burned share of ``job_released``."""
    fees: int
    """The transactions' fees."""

    @property
    def total(self) -> int:
        """What the miner is credited."""
        return self.subsidy_paid + self.job_released - self.job_burned + self.fees

    @property
    def supply_change(self) -> int:
        """Net change of the coin supply (balances plus escrows): minted subsidy less the burn."""
        return self.subsidy_paid - self.job_burned


def subsidy_eligible(rules: ChainRules, job: JobRecord) -> bool:
    """Built-in jobs, and client jobs paying at least ``min_subsidy_fee_per_mmac`` per 2^20 MACs."""
    macs = rules.macs_per_step(job.spec)
    return job.owner == ZERO_ADDRESS or job.spec.fee_per_step << 20 >= rules.min_subsidy_fee_per_mmac * macs


def subsidy_paid(rules: ChainRules, height: int, target: int, steps: int, macs_per_step: int,
                 eligible: bool = True) -> int:
    """``subsidy(height) * min(steps * macs_per_step, W) // W``, ``W = expected_block_work(target)``
    (zero when not ``eligible``): the subsidy a seal of ``steps`` steps earns."""
    if not eligible:
        return 0
    expected = max(1, rules.expected_block_work(target))
    return rules.subsidy(height) * min(steps * macs_per_step, expected) // expected


def block_pay(rules: ChainRules, header: Header, steps: int, fee_per_step: int, builtin: bool) -> int:
    """What a block of ``steps`` steps on a job paying ``fee_per_step`` (built in or not) credits its
    miner besides transaction fees: the subsidy share plus the job pay less the burn. (Job pay is
    never capped by escrow here: a job's escrow always covers the steps it has left.)"""
    spec = JobSpec(dims=tuple(header.dims), dataset_id=bytes(32), batch_size=header.batch_size,
                   lr_shift=header.lr_shift, total_steps=steps, fee_per_step=fee_per_step)
    macs = rules.macs_per_step(spec)
    eligible = builtin or fee_per_step << 20 >= rules.min_subsidy_fee_per_mmac * macs
    pay = steps * fee_per_step
    return subsidy_paid(rules, header.height, header.target, steps, macs, eligible) + pay - burned_share(rules, pay)


def apply_job_progress(state: Overlay, header: Header, seal: Seal) -> int:
    """Advance the header's job by ``seal.steps``; returns what leaves its escrow (the job pay)."""
    job = get_job(state, header.job_id)
    if job is None:
        raise InvalidBlock(Reason.UNKNOWN_JOB, header.job_id.hex())
    if not job.active:
        raise InvalidBlock(Reason.JOB_NOT_ACTIVE, f"job status {job.status}")
    spec = job.spec
    if (tuple(header.dims), header.batch_size, header.lr_shift) != (tuple(spec.dims), spec.batch_size, spec.lr_shift):
        raise InvalidBlock(Reason.BAD_JOB_CONFIG, "the header's model config is not its job's")
    if header.start_state_hash != job.state_hash:
        raise InvalidBlock(Reason.BAD_JOB_PROGRESS, "start state is not the job's current model")
    if not 1 <= seal.steps <= job.steps_left:
        raise InvalidBlock(Reason.BAD_JOB_PROGRESS, f"{seal.steps} steps, {job.steps_left} left")
    pay = min(seal.steps * job.spec.fee_per_step, job.escrow)
    steps_done = job.steps_done + seal.steps
    finished = not job.open_ended and steps_done == job.spec.total_steps
    state.put_job(
        header.job_id,
        _replace_job(
            job, escrow=job.escrow - pay, height=header.height, steps_done=steps_done,
            state_hash=seal.final_state_hash,
            status=JobStatus.FINISHED if finished else JobStatus.ACTIVE,
        ),
    )
    return pay


def burned_share(rules: ChainRules, released: int) -> int:
    """The burned part of released job pay: ``ceil(released * num / den)``."""
    num, den = rules.job_fee_burn
    return -(-released * num // den)


def transition_with_reward(
    pre: StateReader, header: Header, seal: Seal, txs: tuple[SignedTx, ...], rules: ChainRules,
    *, check_signatures: bool = True,
) -> tuple[StateDiff, Reward]:
    """:func:`transition`, also returning the block's :class:`Reward`."""
    if len(txs) > rules.max_block_txs:
        raise InvalidBlock(Reason.TOO_MANY_TXS, f"{len(txs)} > {rules.max_block_txs}")
    seen: set[bytes] = set()
    for tx in txs:
        txid = tx.txid
        if txid in seen:
            raise InvalidBlock(Reason.DUPLICATE_TX, txid.hex())
        seen.add(txid)
    if tx_root(txs) != header.tx_root:
        raise InvalidBlock(Reason.BAD_TX_ROOT, "tx root does not match the transactions")

    state = Overlay(pre)
    job = get_job(pre, header.job_id)
    released = apply_job_progress(state, header, seal)
    if job is None:  # pragma: no cover - apply_job_progress raised
        raise InvalidBlock(Reason.UNKNOWN_JOB, header.job_id.hex())
    paid = subsidy_paid(rules, header.height, header.target, seal.steps, rules.macs_per_step(job.spec),
                        subsidy_eligible(rules, job))
    fees = 0
    for index, tx in enumerate(txs):
        try:
            fees += apply_tx(state, tx, header, rules, check_signature=check_signatures)
        except InvalidTransaction as exc:
            raise InvalidBlock(exc.reason, f"tx {index} ({tx.txid.hex()[:16]}): {exc.detail}") from exc
    reward = Reward(
        subsidy=rules.subsidy(header.height), subsidy_paid=paid, job_released=released,
        job_burned=burned_share(rules, released), fees=fees,
    )
    miner = get_account(state, header.miner)
    if miner.balance + reward.total > U64_MAX:
        raise InvalidBlock(Reason.OVERFLOW, "miner balance would exceed 2^64-1")
    state.put_account(header.miner, Account(balance=miner.balance + reward.total, nonce=miner.nonce))
    return state.diff(), reward


def transition(
    pre: StateReader, header: Header, seal: Seal, txs: tuple[SignedTx, ...], rules: ChainRules,
    *, check_signatures: bool = True,
) -> StateDiff:
    """The post-state diff of a block, without checking ``seal.state_root`` (block builders use this)."""
    return transition_with_reward(pre, header, seal, txs, rules, check_signatures=check_signatures)[0]


def post_state_root(pre: StateReader, diff: StateDiff) -> bytes:
    return state_root_of(merge_sorted(pre.items(), diff))


def apply_block(
    pre: StateReader, block: Block, rules: ChainRules, *, check_signatures: bool = True
) -> StateDiff:
    """``transition`` plus the post-state root check. Raises InvalidBlock naming the broken rule."""
    diff = transition(
        pre, block.header, block.seal, block.txs, rules, check_signatures=check_signatures
    )
    if post_state_root(pre, diff) != block.seal.state_root:
        raise InvalidBlock(Reason.BAD_STATE_ROOT, "seal's state root does not match the post-state")
    return diff
