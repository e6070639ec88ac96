"""``make devnet``: a local network on loopback that shows the whole product working.

Starts three ``pouw-node`` processes (devnet preset) connected in a line, creates two wallets,
runs a CPU ``pouw-mine`` paying the first wallet and training the built-in digits job, sends a
transfer from the first wallet to the second once it has funds and waits for it to confirm,
submits a second small training job, and prints a summary: height and peers of every node, blocks
per miner, each job's steps and held-out accuracy, balances, and where the logs are. While it runs,
a live line every few seconds shows height, peers, the built-in job's accuracy and the balances.
Ctrl-C, SIGTERM (as ``timeout`` sends) or ``--blocks N`` stops every process it started; the summary
is printed and written to ``<dir>/summary.json`` in every case (with ``"interrupted": true`` when
a signal cut the run short, holding whatever was known by then).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from chain.transition import block_pay
from chain.types import COIN, ZERO_ADDRESS, Block, JobSpec, JobSubmit, Transfer, job_id_of
from consensus.presets import DEVNET_PRESET
from wallet.address import encode_address
from wallet.amounts import format_amount
from wallet.client import RpcCredentials
from wallet.keystore import ScryptParams, Wallet
from wallet.txbuild import sign_tx

NODES = 3
LIVE_SECONDS = 5.0
"""Seconds between two live lines."""
FINAL_SYNC_SECONDS = 15.0
"""After an interrupt, how long the summary waits for the nodes to agree on a tip."""
TRANSFER = 2 * COIN
FEE = 20_000
DEVNET_PASSWORD = "devnet"
"""The devnet wallets' password (a local throwaway network; never use such a password for real coins)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Api:
    def __init__(self, port: int, datadir: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.credentials = RpcCredentials(datadir=datadir)

    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            data: bytes = response.read()
            return data

    def post(self, path: str, body: Any) -> Any:
        headers = {"Content-Type": "application/json"}
        auth = self.credentials.header(reload=True)  # the node's .cookie, written when it started
        if auth is not None:
            headers["Authorization"] = auth
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{path}: {exc.code} {exc.read().decode(errors='replace')}") from None


def minted_per_miner(api: Api, blocks: list[dict[str, Any]]) -> dict[str, int]:
    """What each miner's blocks credited it besides tx fees (subsidy share + job pay − burn, v2)."""
    zero = encode_address(ZERO_ADDRESS)
    jobs = {j["job_id"]: j for j in api.get("/api/jobs")["jobs"]}
    minted: Counter[str] = Counter()
    for summary in blocks:
        if summary["height"] == 0:
            continue
        block = Block.decode(api.get_bytes(f"/api/blocks/{summary['hash']}/raw"))
        job = jobs[block.header.job_id.hex()]
        minted[summary["miner"]] += block_pay(
            DEVNET_PRESET.chain_rules, block.header, block.seal.steps, job["spec"]["fee_per_step"],
            builtin=job["owner"] == zero,
        )
    return dict(minted)


class Devnet:
    def __init__(self, root: Path, blocks: int | None, out: Any = sys.stdout) -> None:
        self.root = root
        self.blocks = blocks
        self.out = out
        self.processes: list[subprocess.Popen[bytes]] = []
        self.rpc_ports = [free_port() for _ in range(NODES)]
        self.p2p_ports = [free_port() for _ in range(NODES)]
        self.apis = [Api(port, root / f"node{i}") for i, port in enumerate(self.rpc_ports)]
        self.logs = root / "logs"
        self.summary: dict[str, Any] = {}
        self.addresses: dict[str, str] = {}
        self.txid: str | None = None
        self.job_id: str | None = None
        self.interrupted = False
        self._last_live = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[devnet] {text}", file=self.out, flush=True)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def live(self) -> None:
        """One line: height, peers of each node, the built-in job's accuracy, balances."""
        self._last_live = time.monotonic()
        parts = []
        try:
            statuses = [api.get("/api/status", timeout=5) for api in self.apis]
        except (OSError, ValueError):
            return  # the nodes are not all up yet
        parts.append(f"height {statuses[0]['height']}")
        parts.append("peers " + "/".join(str(s["peers"]) for s in statuses))
        try:
            first = self.apis[0]
            job = next((j for j in first.get("/api/jobs", timeout=5)["jobs"] if j["name"] == "digits"), None)
            if job is not None:
                history = first.get(f"/api/jobs/{job['job_id']}", timeout=5)["history"]
                accuracy = f"{100 * history[-1]['accuracy']:.1f} %" if history else "-"
                parts.append(f"digits {accuracy} after {job['steps_done']} steps")
            for name, addr in self.addresses.items():
                parts.append(f"{name} {format_amount(first.get(f'/api/accounts/{addr}', timeout=5)['balance'])}")
        except (OSError, ValueError, KeyError):
            pass
        self.say("live: " + " | ".join(parts))

    def wait(self, what: str, predicate: Any, timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - self._last_live >= LIVE_SECONDS:
                self.live()
            for process in self.processes:
                if process.poll() is not None:
                    command = " ".join(str(arg) for arg in process.args)  # type: ignore[union-attr]
                    raise RuntimeError(f"a devnet process exited ({command}); see {self.logs}")
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.logs}")

    def start_nodes(self) -> None:
        for i in range(NODES):
            args = ["node.cli", "--preset", "devnet", "--datadir", str(self.root / f"node{i}"),
                    "--rpc-port", str(self.rpc_ports[i]), "--p2p-port", str(self.p2p_ports[i])]
            if i > 0:
                args += ["--connect", f"127.0.0.1:{self.p2p_ports[i - 1]}"]
            self.spawn(f"node{i}", args)
        for i, api in enumerate(self.apis):
            self.wait(f"node{i}", lambda api=api: api.get("/api/status"), 120)
            self.say(f"node{i} up: API {api.url} (dashboard {api.url}/), p2p 127.0.0.1:{self.p2p_ports[i]}")

    def wallets(self) -> tuple[Any, Any]:
        wallet = Wallet(self.root / "wallets", kdf=ScryptParams(n=1 << 12))
        keys = []
        for name in ("alice", "bob"):
            if name not in wallet.names():
                wallet.create(name, DEVNET_PASSWORD)
            keys.append(wallet.load(name, DEVNET_PASSWORD))
        self.addresses = {"alice": encode_address(keys[0].address), "bob": encode_address(keys[1].address)}
        self.say(f"wallets in {self.root / 'wallets'} (password {DEVNET_PASSWORD!r}): "
                 f"alice {encode_address(keys[0].address)}, bob {encode_address(keys[1].address)}")
        return keys[0], keys[1]

    def run(self) -> dict[str, Any]:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.start_nodes()
        alice, bob = self.wallets()
        alice_addr = self.addresses["alice"]
        first = self.apis[0]
        self.spawn("miner", ["node.miner_cli", "--cpu", "--node", first.url, "--datadir", str(self.root / "node0"),
                             "--address", alice_addr])
        self.say("miner started on node0, paying alice and training the built-in digits job")
        start_height = first.get("/api/status")["height"]
        self.wait("alice's first coins", lambda: first.get(f"/api/accounts/{alice_addr}")["balance"] >= TRANSFER + FEE)

        nonce = first.get(f"/api/accounts/{alice_addr}")["next_nonce"]
        transfer = sign_tx(alice, Transfer(chain_id=DEVNET_PRESET.chain_id, nonce=nonce, fee=FEE, to=bob.address,
                                           amount=TRANSFER, memo=b"hello from make devnet"))
        txid = self.txid = first.post("/api/tx", {"tx": transfer.encode().hex()})["txid"]
        self.say(f"alice sends {format_amount(TRANSFER)} to bob: tx {txid[:16]}")
        tx = self.wait("the transfer to confirm", lambda: (t := first.get(f"/api/tx/{txid}"))["status"] == "confirmed"
                       and t)
        self.say(f"transfer confirmed in block {tx['height']}")

        spec = JobSpec(dims=(64, 64, 64), dataset_id=DEVNET_PRESET.builtin_dataset().id, batch_size=64, lr_shift=8,
                       total_steps=6000, fee_per_step=100)
        submit = sign_tx(alice, JobSubmit(chain_id=DEVNET_PRESET.chain_id, nonce=nonce + 1, fee=FEE, spec=spec,
                                          name="devnet-small-job"))
        first.post("/api/tx", {"tx": submit.encode().hex()})
        job_id = self.job_id = job_id_of(submit.txid).hex()
        self.say(f"alice submits a second job (6000 steps at 100 units/step): job {job_id[:16]}")
        self.wait("the second job to be trained", lambda: first.get(f"/api/jobs/{job_id}")["steps_done"] > 0)

        if self.blocks is not None:
            target = start_height + self.blocks
            self.wait(f"height {target}", lambda: first.get("/api/status")["height"] >= target)
        else:
            self.say(f"running; press Ctrl-C to stop (the summary follows); a live line every {LIVE_SECONDS:g} s")
            try:
                while True:
                    time.sleep(1)
                    self.wait("processes", lambda: True)
            except KeyboardInterrupt:
                self.interrupted = True
        return self.report()

    def one_tip(self, timeout: float) -> bool:
        try:
            self.wait("every node on one tip",
                      lambda: len({api.get("/api/status", timeout=5)["tip"] for api in self.apis}) == 1, timeout)
            return True
        except RuntimeError as exc:
            self.say(f"warning: {exc}")
            return False

    def report(self) -> dict[str, Any]:
        """Print the summary and write summary.json, from whatever the nodes answer now."""
        synced = self.one_tip(FINAL_SYNC_SECONDS if self.interrupted else 120)
        first = self.apis[0]
        nodes = []
        for api in self.apis:
            try:
                nodes.append(api.get("/api/status", timeout=10))
            except (OSError, ValueError):
                nodes.append({"height": None, "tip": "", "peers": 0})
        if nodes[0]["height"] is None:
            summary: dict[str, Any] = {"interrupted": self.interrupted, "height": None, "tip": "", "nodes": [],
                                       "logs": str(self.logs), "error": "node0 did not answer"}
            self.say("node0 did not answer: no summary beyond this line")
            (self.root / "summary.json").write_text(json.dumps(summary, indent=2))
            return summary
        blocks = first.get("/api/blocks?limit=200")["blocks"]
        miners = Counter(b["miner"] for b in blocks if b["height"] > 0)
        minted = minted_per_miner(first, blocks)
        jobs = []
        for job in first.get("/api/jobs")["jobs"]:
            detail = first.get(f"/api/jobs/{job['job_id']}")
            history = detail["history"]
            jobs.append({"job_id": job["job_id"], "name": job["name"], "steps": job["steps_done"],
                         "accuracy": history[-1]["accuracy"] if history else None,
                         "initial_accuracy": history[0]["accuracy"] if history else None})
        summary = {
            "interrupted": self.interrupted, "synced": synced,
            "height": nodes[0]["height"], "tip": nodes[0]["tip"],
            "nodes": [{"url": api.url, "height": s["height"], "tip": s["tip"], "peers": s["peers"]}
                      for api, s in zip(self.apis, nodes, strict=True)],
            "blocks_per_miner": dict(miners), "minted": minted,
            "transfer": first.get(f"/api/tx/{self.txid}") if self.txid else None,
            "jobs": jobs,
            "balances": {name: first.get(f"/api/accounts/{addr}")["balance"] for name, addr in self.addresses.items()},
            "addresses": dict(self.addresses), "logs": str(self.logs), "second_job": self.job_id,
        }
        self.print_summary(summary)
        (self.root / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def print_summary(self, s: dict[str, Any]) -> None:
        say = self.say
        say("=" * 72)
        say(f"height {s['height']}  tip {s['tip'][:16]}")
        for i, node in enumerate(s["nodes"]):
            say(f"  node{i} {node['url']}  height {node['height']}  tip {node['tip'][:16]}  peers {node['peers']}")
        for miner, count in s["blocks_per_miner"].items():
            say(f"  miner {miner}: {count} blocks")
        for job in s["jobs"]:
            accuracy = "-" if job["accuracy"] is None else f"{100 * job['accuracy']:.1f} %"
            start = "-" if job["initial_accuracy"] is None else f"{100 * job['initial_accuracy']:.1f} %"
            say(f"  job {job['name']:<18} {job['job_id'][:16]}  steps {job['steps']:>6}  "
                f"held-out accuracy {start} -> {accuracy}")
        for name, units in s["balances"].items():
            say(f"  {name:<5} {s['addresses'][name]}  {format_amount(units)} coins")
        if s["transfer"] is not None:
            say(f"  transfer {s['transfer']['txid'][:16]} {s['transfer']['status']}"
                + (f" in block {s['transfer']['height']}" if "height" in s["transfer"] else ""))
        if s["interrupted"]:
            say("  (interrupted: the summary holds what was known at that moment)")
        say(f"logs: {s['logs']}")
        say("=" * 72)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                is_miner = "node.miner_cli" in map(str, process.args)  # type: ignore[arg-type]
                process.send_signal(signal.SIGINT if is_miner else signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make devnet", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("devnet"), help="where nodes, wallets and logs live")
    parser.add_argument("--blocks", type=int, default=None, help="stop by itself N blocks after the start")
    parser.add_argument("--fresh", action="store_true", help="delete --dir first")
    args = parser.parse_args(argv)
    if args.fresh and args.dir.exists():
        shutil.rmtree(args.dir)
    devnet = Devnet(args.dir.resolve(), args.blocks)
    # Ctrl-C reaches the whole foreground process group; the children get their own sessions, so
    # only this process sees it and stops them in order. SIGTERM does the same; and SIGINT is
    # re-armed in case this process was started with it ignored (as a shell's background job is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        devnet.run()
        return 0  # Ctrl-C or SIGTERM once it runs is the normal way to stop it
    except KeyboardInterrupt:
        devnet.say("interrupted")
        devnet.interrupted = True
        try:
            devnet.report()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            devnet.say(f"no summary: {exc}")
        return 130
    except RuntimeError as exc:
        devnet.say(f"error: {exc}")
        return 1
    finally:
        devnet.stop()
        devnet.say("all devnet processes stopped")


if __name__ == "__main__":
    sys.exit(main())
