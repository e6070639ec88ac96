"""How chain values look in the HTTP API: JSON-ready dicts, and the parsers for what clients send.

Hashes and raw bytes are lowercase hex; addresses are bech32m (``pw1...``); amounts are integers of
base units with a ``*_coins`` string beside them for people (8 fixed decimals, never floats).
"""

from __future__ import annotations

from typing import Any

from chain.errors import PouwError
from chain.state import JobRecord, JobStatus
from chain.types import (
    Block,
    DatasetChunk,
    DatasetPublish,
    Header,
    JobCancel,
    JobSpec,
    JobSubmit,
    SignedTx,
    Transfer,
)
from wallet.address import InvalidAddress, decode_address, encode_address
from wallet.amounts import format_amount


class BadRequest(PouwError):
    """A client sent something the API cannot take; becomes a 400 with this message."""


def address(raw: bytes) -> str:
    return encode_address(raw)


def parse_address(text: str) -> bytes:
    if not text.isascii() or len(text) > 128:
        raise BadRequest("bad address: not a pw1... address")
    try:
        return decode_address(text)
    except InvalidAddress as exc:
        raise BadRequest(f"bad address: {exc}") from exc


def parse_uint(text: str, what: str, max_digits: int) -> int:
    """A non-negative decimal integer of ASCII digits only: ``str.isdigit`` and ``int`` also take
    ``²`` or Arabic-Indic digits, which no client means."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        raise BadRequest(f"{what} must be a non-negative integer of at most {max_digits} ASCII digits")
    return int(text)


def parse_hash(text: str, what: str = "hash") -> bytes:
    if len(text) != 64 or not text.isascii():
        raise BadRequest(f"{what} must be 64 hex digits")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{what} must be 64 hex digits") from None
    if len(raw) != 32:
        raise BadRequest(f"{what} must be 64 hex digits")
    return raw


def parse_hex(text: Any, what: str, max_bytes: int) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{what} must be a hex string")
    if len(text) > 2 * max_bytes:
        raise BadRequest(f"{what} is longer than {max_bytes} bytes")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{what} is not valid hex") from None


def amount(units: int) -> dict[str, Any]:
    return {"units": units, "coins": format_amount(units)}


def job_spec(spec: JobSpec) -> dict[str, Any]:
    return {
        "dims": list(spec.dims), "dataset_id": spec.dataset_id.hex(), "batch_size": spec.batch_size,
        "lr_shift": spec.lr_shift, "total_steps": spec.total_steps, "fee_per_step": spec.fee_per_step,
    }


def tx_body(tx: SignedTx) -> dict[str, Any]:
    body = tx.body
    common = {"chain_id": body.chain_id, "nonce": body.nonce, "fee": body.fee}
    if isinstance(body, Transfer):
        return {"kind": "transfer", **common, "to": address(body.to), "amount": body.amount,
                "amount_coins": format_amount(body.amount), "memo": body.memo.decode("utf-8", "replace")}
    if isinstance(body, JobSubmit):
        return {"kind": "job_submit", **common, "name": body.name, "spec": job_spec(body.spec)}
    if isinstance(body, JobCancel):
        return {"kind": "job_cancel", **common, "job_id": body.job_id.hex()}
    if isinstance(body, DatasetPublish):
        return {"kind": "dataset_publish", **common, "name": body.name, "size": len(body.data),
                "dataset_id": body.dataset_id.hex()}
    if isinstance(body, DatasetChunk):
        return {"kind": "dataset_chunk", **common, "size": len(body.data), "part_id": body.part_id.hex()}
    raise BadRequest("unknown transaction kind")  # pragma: no cover


def tx(signed: SignedTx, block: Block | None = None) -> dict[str, Any]:
    out = {"txid": signed.txid.hex(), "from": address(signed.sender), **tx_body(signed),
           "size": len(signed.encode())}
    if block is not None:
        out["block_hash"] = block.hash.hex()
        out["height"] = block.height
        out["status"] = "confirmed"
    else:
        out["status"] = "pending"
    return out


def header(h: Header) -> dict[str, Any]:
    return {
        "version": h.version, "height": h.height, "prev_hash": h.prev_hash.hex(), "timestamp": h.timestamp,
        "tx_root": h.tx_root.hex(), "target": f"{h.target:064x}", "miner": address(h.miner),
        "job_id": h.job_id.hex(), "start_state_hash": h.start_state_hash.hex(),
    }


def tile_winner(block: Block) -> dict[str, Any] | None:
    if not block.seal.proof:
        return None
    from pouw.proof import TileProof

    try:
        proof = TileProof.decode(block.seal.proof)
    except PouwError:
        return None
    return {"step": proof.step, "matmul": proof.matmul_index, "tile": proof.tile_index,
            "shape": [proof.m, proof.k, proof.n]}


def block_summary(block: Block) -> dict[str, Any]:
    return {
        "hash": block.hash.hex(), "height": block.height, "timestamp": block.header.timestamp,
        "miner": address(block.header.miner), "job_id": block.header.job_id.hex(),
        "steps": block.seal.steps, "txs": len(block.txs), "size": len(block.encode()),
        "tile": tile_winner(block),
    }


def block(b: Block, *, full: bool = True) -> dict[str, Any]:
    out = block_summary(b)
    out["header"] = header(b.header)
    out["seal"] = {
        "steps": b.seal.steps, "final_state_hash": b.seal.final_state_hash.hex(),
        "trajectory_root": b.seal.trajectory_root.hex(), "state_root": b.seal.state_root.hex(),
        "proof_bytes": len(b.seal.proof),
    }
    out["work_bytes"] = len(b.work)
    if full:
        out["transactions"] = [tx(t, b) for t in b.txs]
    return out


def job(job_id: bytes, record: JobRecord) -> dict[str, Any]:
    spent = record.steps_done * record.spec.fee_per_step  # paid to miners (a cancel refunds the rest)
    try:
        status = JobStatus(record.status).name.lower()
    except ValueError:
        status = str(record.status)
    return {
        "job_id": job_id.hex(), "name": record.name, "owner": address(record.owner), "status": status,
        "spec": job_spec(record.spec), "steps_done": record.steps_done, "steps_left": record.steps_left,
        "escrow_left": record.escrow, "escrow_spent": spent, "model_hash": record.state_hash.hex(),
        "created_height": record.created_height, "updated_height": record.updated_height,
    }
