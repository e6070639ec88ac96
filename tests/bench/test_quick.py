"""Smoke test of ``pouw-bench``: the smallest chain and verify suites write complete reports.

Checks the files and their keys, never the speeds. The chain suite starts two real regtest nodes
and a miner; its sync part is either measured or reported unavailable with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
import torch

from benchmarks.cli import main
from benchmarks.framework import Samples, int8_peak_tops, measure, measure_interleaved, paired_ratio


def load(out: Path, suite: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / f"{suite}.json").read_text())
    assert document["suite"] == suite
    assert document["status"] == "ok", document.get("error")
    assert document["machine"]["cpu_cores"] >= 1 and document["machine"]["cpu_model"]
    assert document["device"]["name"] == "cpu"
    assert {"python", "torch", "numpy"} <= document["versions"].keys()
    assert document["parameters"]["mode"] == "tiny" and document["parameters"]["device"] == "cpu"
    assert document["plots"][0] == f"{suite}.png"
    assert (out / f"{suite}.png").read_bytes().startswith(b"\x89PNG")
    assert document["headline"]
    return document


def assert_samples(entry: dict[str, Any]) -> None:
    assert entry["unit"] == "s" and entry["samples"] and entry["median"] > 0
    assert min(entry["samples"]) <= entry["median"] <= max(entry["samples"])


def test_chain_and_verify_suites_write_their_reports(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    main(["chain", "verify", "--quick", "--tiny", "--no-progress", "--out", str(tmp_path)], standalone_mode=False)
    assert torch.get_num_threads() == threads  # the CLI gives back the thread setting it changed

    chain = load(tmp_path, "chain")["results"]
    for verifier in ("coincurve", "ecdsa"):
        assert_samples(chain["signatures"][verifier])
        assert chain["signatures"][verifier]["verifications_per_s"] > 0
    for mode in ("with_signature", "without_signature"):
        assert_samples(chain["transactions"][mode])
    imports = chain["block_import"]
    assert len(imports["import"]["samples"]) == imports["blocks"] > 0
    node = chain["node_import"]
    assert node["blocks"] > 0 and node["headers_per_s"] > 0 and node["blocks_per_s"] > 0
    assert node["reader_wait_max_s"] >= node["reader_wait_median_s"] > 0
    sync = chain["sync"]
    assert sync["blocks"] >= 10
    if sync["status"] == "ok":
        assert sync["sync_s"] > 0 and sync["blocks_per_s"] > 0
    else:
        assert sync["status"] == "unavailable" and sync["reason"]

    (devnet,) = load(tmp_path, "verify")["results"]["presets"]
    assert devnet["preset"] == "devnet" and devnet["shard_steps"] >= 32
    assert len(devnet["verify_winning_tile_ms_samples"]) == 20
    assert 0 < devnet["replayed_steps"] <= devnet["shard_steps"]
    assert 0 < devnet["seal_fraction_of_block_macs"] < 1
    assert devnet["verify_seal_ms_median"] > devnet["verify_winning_tile_ms_median"] > 0
    (worst,) = load(tmp_path, "verify")["results"]["worst_case"]
    assert worst["preset"] == "devnet" and worst["verify_budget_ms"] == 1_000
    assert worst["replay_macs"] <= worst["max_replay_macs_cap"]
    assert worst["worst_case_verify_ms"] >= worst["verify_winning_tile_ms_median"] > 0
    assert isinstance(worst["within_budget"], bool)


def test_int8_peaks_match_the_longest_known_name() -> None:
    assert int8_peak_tops("NVIDIA H100 80GB HBM3") == 1979.0
    assert int8_peak_tops("NVIDIA H100 PCIe") == 1513.0
    assert int8_peak_tops("NVIDIA H200") == 1979.0
    assert int8_peak_tops("NVIDIA L40S") == 733.0
    assert int8_peak_tops("NVIDIA L4") == 242.5
    assert int8_peak_tops("Some Future GPU") is None


def test_measure_batches_fast_calls_and_reports_time_per_call() -> None:
    calls = []
    timing = measure(lambda: calls.append(1), repeats=4, min_sample_s=0.001, warmup=2)
    assert timing.calls_per_sample > 1
    assert len(timing.seconds) == 4
    assert len(calls) == 2 + 1 + 4 * timing.calls_per_sample
    assert timing.median < 0.001


def test_interleaved_measurement_takes_the_samples_in_turn() -> None:
    """Compared operations are sampled round by round (order rotated), not one block after another."""
    order: list[str] = []
    timings = measure_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b"), "c": lambda: order.append("c")},
        repeats=3, warmup=1,
    )
    assert order[:3] == ["a", "b", "c"]  # one warm-up call each (no sizing call without min_sample_s)
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t.seconds) == 3 and t.calls_per_sample == 1 for t in timings.values())


def test_paired_ratio_is_the_median_of_the_per_round_ratios() -> None:
    """A machine twice as slow in one round slows both sides of that round's ratio: the paired ratio
    stays 2.0 where the ratio of the medians, pairing samples of different rounds, reads 1.0."""
    mined = Samples([2.0, 4.0, 2.0])  # round 2 ran on a slow machine
    plain = Samples([1.0, 2.0, 2.0])  # so did round 3's plain sample
    assert paired_ratio(mined, plain) == 2.0
    assert mined.median / plain.median == 1.0
    with pytest.raises(ValueError):
        paired_ratio(mined, Samples([1.0]))


def test_an_unknown_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(click.ClickException, match="device 'tpu:0'"):
        main(["chain", "--device", "tpu:0", "--out", str(tmp_path)], standalone_mode=False)
    assert not list(tmp_path.iterdir())


def test_attack_strategies_pay_less_than_honest_mining(tmp_path: Path) -> None:
    main(["attack", "--quick", "--tiny", "--no-progress", "--out", str(tmp_path)], standalone_mode=False)
    results = load(tmp_path, "attack")["results"]
    assert (tmp_path / "attack_strategies.png").read_bytes().startswith(b"\x89PNG")
    (play,) = results["strategies"]
    rows = {row["strategy"]: row for row in play["strategies"]}
    assert rows["honest"]["ratio_to_honest"] == 1.0 and rows["honest"]["reward_per_mac"] > 0
    # Re-stamping draws no new ticket under v2 (it did under v1).
    restamp = rows["grind (re-stamp)"]
    assert restamp["distinct_tickets_v2"] == 1 and restamp["distinct_tickets_v1"] == restamp["restamps"] > 1
    # A one-step block earns one step's share: far below honest, even with draws for almost nothing.
    # Each shard nonce is a new ticket, but only after a real training step of its own shard.
    one_step = rows["grind (one step per nonce)"]
    assert one_step["distinct_tickets"] == one_step["nonces"] > 1 and one_step["steps_trained_per_nonce"] == 1
    assert one_step["ratio_to_honest_if_draws_cost_only_the_first_matmul"] < 0.1
    # Restarting a shard under a new nonce sooner than the cap pays less, the sooner the less.
    short = [rows[f"grind ({n} steps per nonce)"]["ratio_to_honest"] for n in (16, 256)]
    assert one_step["ratio_to_honest"] < short[0] < short[1] < 1
    fabricate = [row for name, row in rows.items() if name.startswith("fabricate")]
    assert [row["phi"] for row in fabricate] == sorted(row["phi"] for row in fabricate)
    assert all(row["ratio_to_honest"] < 1 for row in fabricate)
    assert fabricate[-1]["ratio_to_honest"] < fabricate[0]["ratio_to_honest"]
    assert play["fabricated_seals"]["verifier_agrees_with_plan"] == play["fabricated_seals"]["seals"]
    assert play["honest_on_top"] and results["honest_on_top"]
    odds = {o["preset"]: o for o in results["builtin_shard_odds"]}
    assert set(odds) == {"devnet", "testnet", "mainnet"}
    assert odds["devnet"]["shards_per_win"] < 1.01 < odds["testnet"]["shards_per_win"] < odds["mainnet"]["shards_per_win"]
