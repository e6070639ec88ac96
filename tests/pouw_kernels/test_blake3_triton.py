"""The device BLAKE3 kernels (pouw/kernels/blake3_triton.py) under the Triton interpreter, against
the ``blake3`` package and BLAKE3's official keyed-hash test vectors.

The kernels run in one subprocess with ``TRITON_INTERPRET=1`` (read when triton compiles a kernel):
it hashes every case, runs a small hypothesis search over shapes (asserting against the package
inside the subprocess), and prints the hex results; the tests here compare them with the package.
Each full 1024-byte chunk costs the interpreter ~3 s of numpy per launch, so the cases pair two
lengths per launch (rows not a multiple of ``block_rows`` give a shorter last leaf).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import blake3
import numpy as np
import pytest
import torch

from pouw.kernels import blake3_triton
from pouw.kernels.blake3_triton import (
    first_winner,
    leaf_hashes_host,
    tickets_host,
    win_threshold,
)

# (rows, width, block_rows): the leaf byte lengths are block_rows·width and the remainder.
LEAF_CASES = [
    (3, 1, 2),  # 2 and 1 byte
    (66, 1, 65),  # 65 and 1
    (2, 64, 1),  # one block exactly
    (2047, 1, 1024),  # 1024 and 1023: one chunk, full and one byte short (byte loads)
    (218, 5, 205),  # 1025 (two chunks, the second of 1 byte) and 65
    (3141, 1, 3077),  # 3·1024 + 5 (four chunks) and 64
    (65, 64, 64),  # 64·64 = 4096 (four full chunks, word loads) and 64
    (133, 192, 64),  # 64·192 = 12288 (12 chunks: 12, 6, 3, 2, 1 nodes per level) twice, and 960
]
TICKET_TILES = 300
KAT_KEY = b"whats the Elvish word for friend"
# BLAKE3's test_vectors.json, keyed_hash (first 32 bytes) of the bytes i % 251, i < input_len.
KAT = {
    1: "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b",
    1023: "c951ecdf03288d0fcc96ee3413563d8a6d3589547f2c2fb36d9786470f1b9d6e",
    1024: "75c46f6f3d9eb4f55ecaaee480db732e6c2105546f1e675003687c31719c7ba4",
    1025: "357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69",
    3073: "68dede9bef00ba89e43f31a6825f4cf433389fedae75c04ee9f0cf16a427c95a",
    5121: "6ccf1c34753e7a044db80798ecd0782a8f76f33563accaddbfbb2e0ea4b2d024",
    7169: "ed9b1a922c046fdb3d423ae34e143b05ca1bf28b710432857bf738bcedbfa511",
}
KERNEL_KAT = 5121  # six chunks, the last of one byte (6, 3, 2, 1 nodes per level)
KAT_TAIL = 5113  # the kernel's KAT launch hashes a second, shorter leaf: 5 chunks (5, 3, 2, 1 nodes)


def _case_input(seed: int, rows: int, width: int) -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (rows, width), dtype=np.int8), bytes(rng.integers(0, 256, 32, dtype=np.uint8))


def _ticket_input() -> tuple[bytes, np.ndarray, bytes]:
    rng = np.random.default_rng(99)
    lanes = rng.integers(0, 1 << 31, (TICKET_TILES, 4), dtype=np.int64)
    lanes[0] = (1 << 31) - 1
    lanes[1] = 0
    lanes[2] = [0x01020304, 0x7F000080, 0x000000FF, (1 << 31) - 2]
    return bytes(rng.integers(0, 256, 32, dtype=np.uint8)), lanes, bytes(rng.integers(0, 256, 32, dtype=np.uint8))


def _kat_input(length: int) -> np.ndarray:
    return (np.arange(length) % 251).astype(np.uint8).view(np.int8).reshape(length, 1)


SCRIPT = """
import json, sys
import blake3, numpy as np, torch
from hypothesis import given, settings, strategies as st
sys.path.insert(0, sys.argv[2])
from test_blake3_triton import LEAF_CASES, KERNEL_KAT, KAT_KEY, KAT_TAIL, _case_input, _kat_input, _ticket_input
from pouw.kernels.blake3_triton import leaf_hashes, tickets

out = {"leaves": [], "searched": 0}
for i, (rows, width, block_rows) in enumerate(LEAF_CASES):
    x, key = _case_input(i, rows, width)
    out["leaves"].append([bytes(r).hex() for r in leaf_hashes(torch.from_numpy(x), block_rows, key).numpy()])
sigma, lanes, key = _ticket_input()
out["tickets"] = [bytes(r).hex() for r in tickets(sigma, torch.from_numpy(lanes), key).numpy()]
ones = (1).to_bytes(4, "little") * 8  # key and σ_m words equal to 1 (the value Triton likes to specialise)
out["ones"] = [bytes(r).hex() for r in tickets(ones, torch.from_numpy(lanes[:3]), ones).numpy()]
base = torch.from_numpy(_case_input(50, 1, 65)[0]).reshape(-1)
unaligned = base[1:].view(8, 8)  # 4-aligned lengths at an odd address: byte loads
out["unaligned"] = [bytes(r).hex() for r in leaf_hashes(unaligned, 3, KAT_KEY).numpy()]
kat = leaf_hashes(torch.from_numpy(_kat_input(KERNEL_KAT + KAT_TAIL)), KERNEL_KAT, KAT_KEY)
out["kat"] = [bytes(r).hex() for r in kat.numpy()]

@settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True, database=None)
@given(st.integers(1, 8), st.integers(0, 130), st.integers(1, 4), st.binary(min_size=32, max_size=32))
def search(rows, width, block_rows, key):
    x = np.frombuffer(bytes(range(256)) * (rows * width // 256 + 1), dtype=np.int8)[:rows * width]
    x = x.reshape(rows, width).copy()
    got = [bytes(r) for r in leaf_hashes(torch.from_numpy(x), block_rows, key).numpy()]
    want = [blake3.blake3(x[s:s + block_rows].tobytes(), key=key).digest() for s in range(0, rows, block_rows)]
    assert got == want, (rows, width, block_rows, key.hex())
    out["searched"] += 1

search()
print(json.dumps(out))
"""
SEARCH_EXAMPLES = 10


@pytest.fixture(scope="module")
def interpreted() -> dict[str, Any]:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(SEARCH_EXAMPLES), here], env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_leaf_hashes_match_the_blake3_package(interpreted: dict[str, Any]) -> None:
    assert len(interpreted["leaves"]) == len(LEAF_CASES)
    for i, ((rows, width, block_rows), got) in enumerate(zip(LEAF_CASES, interpreted["leaves"], strict=True)):
        x, key = _case_input(i, rows, width)
        want = leaf_hashes_host(x, block_rows, key)
        assert len(want) == -(-rows // block_rows)
        assert got == [h.hex() for h in want], (rows, width, block_rows)


def test_leaf_hashes_of_an_unaligned_view_match_the_package(interpreted: dict[str, Any]) -> None:
    x = _case_input(50, 1, 65)[0].reshape(-1)[1:].reshape(8, 8)
    assert interpreted["unaligned"] == [h.hex() for h in leaf_hashes_host(x, 3, KAT_KEY)]


def test_leaf_hashes_match_the_official_keyed_vector(interpreted: dict[str, Any]) -> None:
    x = _kat_input(KERNEL_KAT + KAT_TAIL)
    assert interpreted["kat"] == [KAT[KERNEL_KAT], blake3.blake3(x[KERNEL_KAT:].tobytes(), key=KAT_KEY).hexdigest()]


def test_leaf_hashes_hold_on_searched_shapes(interpreted: dict[str, Any]) -> None:
    """The hypothesis search ran in the subprocess (it asserts there, against the package)."""
    assert interpreted["searched"] == SEARCH_EXAMPLES


def test_tickets_match_the_blake3_package(interpreted: dict[str, Any]) -> None:
    sigma, lanes, key = _ticket_input()
    want = tickets_host(sigma, lanes, key)
    assert interpreted["tickets"] == [t.hex() for t in want]
    message = sigma + (2).to_bytes(8, "little") + bytes.fromhex("01020304" "7f000080" "000000ff" "7ffffffe")
    assert interpreted["tickets"][2] == blake3.blake3(message, key=key).hexdigest()
    ones = (1).to_bytes(4, "little") * 8
    assert interpreted["ones"] == [t.hex() for t in tickets_host(ones, lanes[:3], ones)]


def test_host_reference_matches_the_official_keyed_vectors() -> None:
    for length, digest in KAT.items():
        assert leaf_hashes_host(_kat_input(length), length, KAT_KEY) == [bytes.fromhex(digest)]
        assert leaf_hashes_host(_kat_input(length).reshape(1, length), 1, KAT_KEY) == [bytes.fromhex(digest)]


def test_host_reference_splits_rows_into_blocks() -> None:
    x, key = _case_input(7, 10, 33)
    got = leaf_hashes_host(x, 4, key)
    assert got == [blake3.blake3(x[s:s + 4].tobytes(), key=key).digest() for s in (0, 4, 8)]
    assert got[0] != blake3.blake3(x[0:4].tobytes()).digest()  # keyed, not plain


def test_first_winner_follows_the_win_rule() -> None:
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    raw[50, :4] = 0  # the smallest ticket
    raw[120] = raw[50]  # a tie for the minimum: the lower index is reported
    raw[7, :4] = [0, 0, 0, 1]  # differs from a threshold only in the low words
    tickets = torch.from_numpy(raw)
    values = [int.from_bytes(bytes(r), "big") for r in raw]
    best = min(values)
    assert values.index(best) == 50
    for target, tile_work, reference_work in [
        (values[7] + 1, 1, 1), (values[7], 1, 1), (best, 1, 1), (best + 1, 1, 1), (0, 1, 1),
        (1 << 256, 1, 1), (1 << 250, 3, 7), (values[7] * 5 + 4, 1, 5), (1 << 300, 2, 1),
    ]:
        threshold = win_threshold(target, tile_work, reference_work)
        wins = [i for i, v in enumerate(values) if v * reference_work < target * tile_work]
        winner = wins[0] if wins else -1
        want = (winner, 50, bytes(raw[winner]) if wins else None, bytes(raw[50]))
        assert first_winner(tickets, threshold) == want, (target, tile_work)
    assert first_winner(torch.zeros((0, 32), dtype=torch.uint8), 5) == (-1, -1, None, None)
    one = first_winner(tickets[:1], 1 << 256)
    assert (one.winner, one.best, one.winner_ticket) == (0, 0, bytes(raw[0]))


def test_tickets_host_encodes_lanes_big_endian_after_a_little_endian_index() -> None:
    sigma, key = bytes(range(32)), bytes(range(32, 64))
    lanes = np.array([[1, 2, 3, 0x7FFFFFFF], [0, 0, 0, 0]], dtype=np.int64)
    got = tickets_host(sigma, lanes, key)
    first = sigma + bytes(8) + bytes.fromhex("00000001" "00000002" "00000003" "7fffffff")
    second = sigma + b"\x01" + bytes(7) + bytes(16)
    assert got == [blake3.blake3(first, key=key).digest(), blake3.blake3(second, key=key).digest()]
    with pytest.raises(ValueError):
        tickets_host(sigma, np.array([[-1, 0, 0, 0]]), key)


def test_bad_arguments_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros((4, 4), dtype=torch.int8)
    with pytest.raises(ValueError):
        blake3_triton.leaf_hashes(x, 2, bytes(31))
    with pytest.raises(ValueError):
        blake3_triton.leaf_hashes(x.to(torch.int32), 2, bytes(32))
    with pytest.raises(ValueError):
        blake3_triton.leaf_hashes(x, 0, bytes(32))
    with pytest.raises(ValueError):
        blake3_triton.tickets(bytes(32), torch.zeros((3, 3), dtype=torch.int64), bytes(32))
    with pytest.raises(ValueError):
        first_winner(torch.zeros((3, 31), dtype=torch.uint8), 1)
    monkeypatch.setattr(blake3_triton, "HAVE_TRITON", False)
    with pytest.raises(RuntimeError, match="triton is not installed"):
        blake3_triton.leaf_hashes(x, 2, bytes(32))
    with pytest.raises(RuntimeError, match="triton is not installed"):
        blake3_triton.tickets(bytes(32), torch.zeros((3, 4), dtype=torch.int64), bytes(32))


def test_leaf_hash_cost_counts_chunk_blocks_parents_and_levels() -> None:
    # m = k = 8192, BM = 64: 128 leaves of 512 KiB, each 512 chunks of 16 blocks and 511 parents.
    assert blake3_triton.leaf_hash_cost(8192, 8192, 64) == (128 * (512 * 16 + 511), 1 + 9)
    assert blake3_triton.leaf_hash_cost(3, 1, 2) == (2, 1)  # two one-block leaves
    assert blake3_triton.leaf_hash_cost(133, 192, 64) == (25 * 16 + 2 * 11, 1 + 4)  # 12, 12, 1 chunks
    assert blake3_triton.leaf_hash_cost(0, 64, 64) == (0, 0)


def test_empty_inputs_launch_nothing() -> None:
    pytest.importorskip("triton")
    key = bytes(range(32))
    assert blake3_triton.leaf_hashes(torch.zeros((0, 64), dtype=torch.int8), 4, key).shape == (0, 32)
    assert blake3_triton.tickets(key, torch.zeros((0, 4), dtype=torch.int64), key).shape == (0, 32)
    assert leaf_hashes_host(np.zeros((0, 64), dtype=np.int8), 4, key) == []
    assert tickets_host(key, np.zeros((0, 4), dtype=np.int64), key) == []


COMPILE_SCRIPT = """
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from pouw.kernels import blake3_triton as m

keys = {f"k{i}": "i32" for i in range(8)}
kernels = [
    (m._chunk_kernel, {"x_ptr": "*i32", "cv_ptr": "*i32", **keys, "total_bytes": "i64", "leaf_bytes": "i32",
                       "chunks_per_leaf": "i32", "chunks_total": "i32", "max_blocks": "i32",
                       "BLOCK": "constexpr", "WORDS": "constexpr"}, {"BLOCK": 128, "WORDS": True}),
    (m._parent_kernel, {"cv_in_ptr": "*i32", "cv_out_ptr": "*i32", **keys, "leaves": "i32", "nodes_in": "i32",
                        "nodes_in_last": "i32", "nodes_out": "i32", "total_out": "i32", "BLOCK": "constexpr"},
     {"BLOCK": 128}),
    (m._ticket_kernel, {"lanes_ptr": "*i64", "out_ptr": "*i32", "tiles": "i32",
                        **{f"w{i}": "i32" for i in range(16)}, "BLOCK": "constexpr"}, {"BLOCK": 128}),
]
out = []
for fn, signature, constexprs in kernels:
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32))
    ptx = compiled.asm["ptx"]
    out.append({"cubin": len(compiled.asm["cubin"]), "shf": ptx.count("shf.")})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_device(tmp_path: Any) -> None:
    """The compiled path (not the interpreter) accepts the kernels: Triton lowers them to PTX and
    ptxas (shipped in the triton wheel) to an sm_90 cubin; no GPU is needed. The rotations
    become funnel shifts (``shf``)."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=280)
    if done.returncode != 0 and ("ptxas" in done.stderr and "not found" in done.stderr):
        pytest.skip("no ptxas in this triton installation")
    assert done.returncode == 0, done.stderr[-3000:]
    chunk, parent, ticket = json.loads(done.stdout.strip().splitlines()[-1])
    for kernel in (chunk, parent, ticket):
        assert kernel["cubin"] > 0
    assert chunk["shf"] >= 7 * 8 * 4  # one compression's rotations, at least
