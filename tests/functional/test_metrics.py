"""``/metrics`` of a real node and of a real ``pouw-mine --metrics-port``, read with prometheus_client's
own text parser: the content type, the metric names, and counts that follow what happened."""

from __future__ import annotations

import hashlib
import urllib.request

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.functional.conftest import Network
from tests.functional.framework import free_port, wait_until
from wallet.address import encode_address
from wallet.keys import PrivateKey

ADDRESS = encode_address(PrivateKey(hashlib.sha256(b"functional-metrics").digest()).address)
NODE_METRICS = {
    "pouw_build_info", "process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds",
    "python_info", "pouw_height", "pouw_tip_timestamp_seconds", "pouw_tip_age_seconds", "pouw_peers",
    "pouw_best_peer_height", "pouw_sync_progress_ratio", "pouw_mempool_txs", "pouw_mempool_bytes",
    "pouw_blocks_accepted", "pouw_blocks_rejected", "pouw_blocks_other", "pouw_tx_submissions",
    "pouw_work_submissions", "pouw_block_validation_seconds", "pouw_verification_seconds", "pouw_useful_steps",
    "pouw_useful_macs", "pouw_useful_steps_per_second", "pouw_useful_macs_per_second", "pouw_jobs_active",
    "pouw_target_log2",
}
MINER_METRICS = {
    "pouw_miner_build_info", "process_cpu_seconds", "pouw_miner_blocks", "pouw_miner_steps", "pouw_miner_macs",
    "pouw_miner_tiles", "pouw_miner_steps_per_second", "pouw_miner_macs_per_second", "pouw_miner_height",
}


def scrape(url: str) -> tuple[str, dict[str, list[Sample]]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    return content_type, {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_node_and_miner_metrics(network: Network) -> None:
    node = network.add_node()
    port = free_port()
    network.add_miner(node, ADDRESS, ["--metrics-port", str(port)])
    wait_until(lambda: node.height() >= 2, 90, "two mined blocks")

    content_type, families = scrape(f"{node.url}/metrics")
    assert content_type == CONTENT_TYPE_LATEST
    assert NODE_METRICS <= families.keys(), NODE_METRICS - families.keys()
    assert value(families["pouw_height"], "pouw_height") >= 2
    assert value(families["pouw_blocks_accepted"], "pouw_blocks_accepted_total", source="miner") >= 2
    assert value(families["pouw_work_submissions"], "pouw_work_submissions_total", status="accepted") >= 2
    assert value(families["pouw_block_validation_seconds"], "pouw_block_validation_seconds_count", source="miner") >= 2
    assert value(families["pouw_useful_steps"], "pouw_useful_steps_total") >= 1
    assert value(families["pouw_sync_progress_ratio"], "pouw_sync_progress_ratio") == 1.0

    def miner_blocks() -> float:
        _, mined = scrape(f"http://127.0.0.1:{port}/metrics")
        assert MINER_METRICS <= mined.keys(), MINER_METRICS - mined.keys()
        return value(mined["pouw_miner_blocks"], "pouw_miner_blocks_total", status="accepted")

    wait_until(lambda: miner_blocks() >= 1, 30, "the miner's own count of accepted blocks")
