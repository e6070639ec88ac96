"""Golden outputs of the protocol PRNG (tests/vectors/prng.json)."""

from __future__ import annotations

from typing import Any

import pytest

from pouw.prng import Prng
from tests.pouw_train.cases import load_vectors

VECTORS = load_vectors("prng.json")


def _prng(case: dict[str, Any]) -> Prng:
    parts = [bytes.fromhex(p) if isinstance(p, str) else p for p in case["parts"]]
    return Prng(case["domain"], *parts)


@pytest.mark.parametrize("case", VECTORS, ids=[c["domain"] for c in VECTORS])
def test_prng_matches_golden_outputs(case: dict[str, Any]) -> None:
    assert _prng(case).bytes(64).hex() == case["bytes_64"]
    assert [str(int(w)) for w in _prng(case).u64s(4)] == case["u64s_4"]
    prng = _prng(case)
    assert [prng.randbelow(1000) for _ in range(8)] == case["randbelow_1000_x8"]
    assert list(_prng(case).randbelow_array(10, 16)) == case["randbelow_array_10_x16"]
    prng = _prng(case)
    assert [prng.randbelow(3 * 10**18) for _ in range(4)] == case["randbelow_3e18_x4"]
    assert _prng(case).sample_without_replacement(20, 5) == case["sample_without_replacement_20_5"]


def test_stream_is_prefix_stable_across_draw_sizes() -> None:
    whole = Prng("pouw/test", b"x").bytes(300)
    prng = Prng("pouw/test", b"x")
    pieces = b"".join(prng.bytes(n) for n in (1, 63, 64, 100, 72))
    assert pieces == whole


def test_vectorised_randbelow_leaves_the_stream_where_the_scalar_loop_does() -> None:
    bound = (1 << 63) + 12345  # rejects about half the words
    a, b = Prng("pouw/test", 9), Prng("pouw/test", 9)
    assert list(a.randbelow_array(bound - (1 << 62), 40)) == [b.randbelow(bound - (1 << 62)) for _ in range(40)]
    assert a.bytes(16) == b.bytes(16)
