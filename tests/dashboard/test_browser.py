"""The dashboard in a real headless Chromium against a real regtest node and CPU miner.

One test follows a live chain: new blocks appear without a reload, a job's accuracy and loss plot
and a block's detail view open by clicking. The other puts HTML and ``<script>`` into a job name and
a memo on chain and shows every view renders them as literal text. Screenshots are saved under
benchmarks/results/dashboard/.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

from chain.types import COIN, JobSpec, JobSubmit, Transfer
from consensus.presets import REGTEST_PRESET
from tests.dashboard.browser import Browser
from tests.functional.conftest import Network
from tests.functional.framework import TestNode, wait_until
from wallet.address import decode_address, encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER_KEY = PrivateKey(hashlib.sha256(b"dashboard-miner").digest())
MINER = encode_address(MINER_KEY.address)
FRIEND = encode_address(PrivateKey(hashlib.sha256(b"dashboard-friend").digest()).address)

# Scripts that would set a global flag if the page ever parsed chain data as HTML.
HOSTILE_NAME = "<script>__pwned=1</script><img src=x onerror=__pwned=2>"
HOSTILE_MEMO = '<script>__pwned=3</script><img src=x onerror="__pwned=4"><b>bold</b> & </td><a href=javascript:x>'


def start_chain(network: Network, blocks: int) -> TestNode:
    node = network.add_node()
    network.add_miner(node, MINER)
    wait_until(lambda: node.height() >= blocks, 120, f"{blocks} regtest blocks")
    return node


def click(browser: Browser, selector: str, attempts: int = 10) -> None:
    """Click the element; the page re-renders its tables as it polls, so a found element can go stale
    before the click lands: find it again and retry."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for attempt in range(attempts):
        browser.wait_for(selector)
        try:
            browser.driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def first_block_height(browser: Browser) -> int:
    return int(browser.js("return document.querySelector('[data-table=blocks] tbody tr').dataset.height;"))


def test_dashboard_follows_the_chain_and_plots_a_job(network: Network, browser: Browser) -> None:
    node = start_chain(network, 3)
    browser.open(node.url + "/")
    browser.wait(lambda: browser.text("#stat-height .card-value"), what="the overview")
    browser.js("window.__samePage = 42;")

    # A new block shows up by itself: the page polls, it does not reload.
    shown = first_block_height(browser)
    browser.wait(lambda: first_block_height(browser) > shown, 60, "a new block without reloading")
    assert browser.js("return window.__samePage;") == 42
    assert browser.js("return performance.getEntriesByType('navigation').length;") == 1
    browser.wait(lambda: int(browser.text("#stat-height .card-value").replace(",", "")) > shown, what="the height card")

    # The overview's figures come from the chain: 2^22 MACs a block on regtest, no peers yet.
    network_info = node.get("/api/network")
    expected = int(network_info["expected_block_macs"]) / 1e6
    assert browser.text("#stat-block-work .card-value") == f"{expected:.2f} MMAC"
    assert browser.text("#stat-work-rate .card-value").endswith("MAC/s")
    assert browser.text("#stat-chain .card-value") == "regtest"
    assert "No peers connected" in browser.text("#peers")
    assert browser.text("#stat-rejected .card-value") == "0"
    browser.wait(lambda: "%" in " ".join(browser.texts("[data-table=jobs] .job-accuracy")), what="job accuracy")
    assert not browser.js("return document.querySelector('#stale-tip') !== null;")  # blocks are seconds old
    assert browser.js("return document.querySelectorAll('#interval-chart rect.bar').length;") >= 1
    browser.screenshot("overview")

    # The built-in job: accuracy and loss against steps, and its model for download.
    click(browser, "[data-table=jobs] a.job-name")
    browser.wait_for("#accuracy-chart path.line")
    assert browser.text("#job-title") == "digits"
    history = node.get(f"/api/jobs/{node.get('/api/jobs')['jobs'][0]['job_id']}")["history"]
    assert len(history) >= 2
    # One vertex per evaluation (the untrained model first, then after each block that trained the job).
    vertices = browser.wait(lambda: browser.js(
        "return document.querySelector('#accuracy-chart path.line').getAttribute('d').split(/[ML]/).length - 1;"),
        what="the accuracy line")
    assert vertices >= 2
    assert browser.js("return document.querySelectorAll('#loss-chart path.line').length;") == 1
    href = browser.js("return document.querySelector('#download-model').getAttribute('href');")
    assert href.endswith("/model?format=npz")
    with zipfile.ZipFile(io.BytesIO(node.get_bytes(href))) as npz:
        assert {"w0.npy", "w1.npy", "step.npy"} <= set(npz.namelist())
    browser.screenshot("job")

    # A block's detail view, reached from the overview's table.
    click(browser, "#nav a[data-route=overview]")
    browser.wait_for("[data-table=blocks] tbody tr a")
    height = first_block_height(browser)
    click(browser, "[data-table=blocks] tbody tr a")
    browser.wait_for("#block-summary")
    block = node.get(f"/api/blocks/{height}")
    assert block["hash"] in browser.text("#block-summary")
    assert browser.text("h1") == f"Block {height:,}"
    browser.screenshot("block")
    assert browser.script_errors() == []


def test_chain_text_is_rendered_as_text(network: Network, browser: Browser) -> None:
    node = start_chain(network, 2)
    nonce = node.get(f"/api/accounts/{MINER}")["next_nonce"]
    spec = JobSpec(dims=(64, 64, 64), dataset_id=REGTEST_PRESET.builtin_dataset().id, batch_size=64, lr_shift=8,
                   total_steps=1_000, fee_per_step=1_000)
    chain_id = REGTEST_PRESET.chain_id
    job = sign_tx(MINER_KEY, JobSubmit(chain_id=chain_id, nonce=nonce, fee=20_000, spec=spec, name=HOSTILE_NAME))
    transfer = sign_tx(MINER_KEY, Transfer(chain_id=chain_id, nonce=nonce + 1, fee=20_000, to=decode_address(FRIEND),
                                           amount=3 * COIN, memo=HOSTILE_MEMO.encode()))
    txids = [node.post("/api/tx", {"tx": tx.encode().hex()})["txid"] for tx in (job, transfer)]
    wait_until(lambda: all(node.get(f"/api/tx/{t}")["status"] == "confirmed" for t in txids), 60, "both txs to confirm")
    job_id = next(j["job_id"] for j in node.get("/api/jobs")["jobs"] if j["name"] == HOSTILE_NAME)
    # The miner takes a new template as often as several times a second, so the two transactions can
    # land in different blocks: each block view is asked for the text of the transactions it holds.
    block_texts: dict[int, list[str]] = {}
    for txid, text in zip(txids, (HOSTILE_NAME, HOSTILE_MEMO), strict=True):
        block_texts.setdefault(node.get(f"/api/tx/{txid}")["height"], []).append(text)

    def injected() -> int:
        """Scripts that ran, plus elements that chain text turned into."""
        return int(browser.js(
            "return (typeof window.__pwned !== 'undefined') + document.querySelectorAll("
            "'#view script, #view img, #view b, #view a[href^=javascript]').length;"))

    views = [
        ("overview", "/", "[data-table=jobs] a.job-name", [HOSTILE_NAME]),
        ("job", f"/#/job/{job_id}", "#job-title", [HOSTILE_NAME]),
        *(("block", f"/#/block/{height}", "[data-table=block-txs] td.wide", texts)
          for height, texts in sorted(block_texts.items())),
        ("account", f"/#/account/{MINER}", "[data-table=account-history] td.wide", [HOSTILE_NAME, HOSTILE_MEMO]),
        ("tx", f"/#/tx/{txids[1]}", "#tx-facts .memo", [HOSTILE_MEMO]),
    ]
    for name, path, selector, expected in views:
        browser.open(node.url + path)

        def shown(selector: str = selector, expected: list[str] = expected) -> bool:
            return all(t in "\n".join(browser.texts(selector)) for t in expected)

        browser.wait(lambda: shown() or injected(), what=f"the hostile text on the {name} view")
        assert injected() == 0, f"chain data became markup or ran on the {name} view"
        assert shown(), f"the {name} view does not show the hostile text literally"
        if name in ("block", "account"):
            browser.screenshot(f"untrusted-text-{name}")
    assert browser.script_errors() == []
