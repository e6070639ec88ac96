"""Suite ``useful``: does mining train the model? Held-out accuracy against steps, three ways.

1. Through the chain: a regtest node and a CPU miner run for a while; the node evaluates the
   built-in digits job after every block, and this suite reads ``GET /api/jobs/{id}`` (polling,
   since the node returns the latest 500 rows) for its (steps, accuracy) history.
2. The same model trained directly with the integer engine, and
3. its float32 twin, both from :func:`benchmarks.accuracy_curves.compare` for as many steps.

The chain's curve follows a new trajectory seed every block (τ binds the start state and the miner)
and starts from the job's own initial draw; the direct runs use accuracy_curves' fixed seeds. So the
curves agree in trend, not step for step. Also reported: training steps per second through the chain
(lottery, blocks, validation, evaluation included) against the direct integer engine.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from benchmarks import accuracy_curves
from benchmarks.framework import RunContext, SuiteReport, figure, rounded
from benchmarks.localnet import LocalNet
from consensus.presets import BUILTIN_JOB_NAME
from pouw.model import ModelConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "useful"
DESCRIPTION = "held-out accuracy vs steps: a job trained through the chain vs direct integer vs float32"
POLL_S = 3.0
CURVE_POINTS = 40


def chain_history(ctx: RunContext, duration: float) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """(the job, its evaluation rows by increasing height, seconds mined) of the built-in job."""
    rows: dict[int, dict[str, Any]] = {}
    with LocalNet() as net:
        node = net.node()
        job = next(j for j in node.get("/api/jobs")["jobs"] if j["name"] == BUILTIN_JOB_NAME)
        path = f"/api/jobs/{job['job_id']}"
        miner = net.miner(node)
        began = time.monotonic()
        polls = max(1, round(duration / POLL_S))
        for _ in ctx.progress(range(polls), "mining the digits job"):
            time.sleep(duration / polls)
            rows.update((row["height"], row) for row in node.get(path)["history"])
        miner.stop()
        mined_s = time.monotonic() - began
        rows.update((row["height"], row) for row in node.get(path)["history"])
        job = node.get(path)
    return job, [rows[h] for h in sorted(rows)], mined_s


def run(ctx: RunContext) -> SuiteReport:
    duration = ctx.pick(120.0, 30.0, 8.0)
    job, history, mined_s = chain_history(ctx, duration)
    spec = job["spec"]
    config = ModelConfig(tuple(spec["dims"]), spec["batch_size"], spec["lr_shift"])
    chain_steps = history[-1]["steps"] if history else 0
    steps = max(chain_steps, 64)
    every = max(1, steps // CURVE_POINTS)
    direct = accuracy_curves.compare("direct", config, "digits", steps, every)
    chain_rate = chain_steps / mined_s
    results: dict[str, Any] = {
        "job": {"job_id": job["job_id"], "name": job["name"], "spec": spec, "steps_done": job["steps_done"]},
        "chain": {
            "mined_s": rounded(mined_s),
            "blocks": history[-1]["height"] if history else 0,
            "steps": chain_steps,
            "steps_per_s": rounded(chain_rate),
            "history": [{k: row[k] for k in ("height", "steps", "accuracy", "loss")} for row in history],
        },
        "direct": asdict(direct),
        "chain_steps_per_s_vs_direct_integer": rounded(chain_rate / direct.integer_steps_per_s),
        "final_accuracy": {
            "chain": history[-1]["accuracy"] if history else None,
            "integer": direct.integer_accuracy[-1],
            "float32": direct.float32_accuracy[-1],
        },
    }
    final = results["final_accuracy"]
    return SuiteReport(
        parameters={"mining_s": duration, "preset": "regtest", "poll_s": POLL_S, "direct_steps": steps,
                    "direct_every": every, "direct_init_seed": accuracy_curves.INIT_SEED.decode(),
                    "direct_trajectory_seed": accuracy_curves.TRAJECTORY_SEED.decode()},
        results=results,
        headline=[
            f"chain: {chain_steps} steps in {mined_s:.0f} s ({chain_rate:.3g} steps/s, "
            f"{results['chain_steps_per_s_vs_direct_integer']:.2g} of direct integer training)",
            f"accuracy after {steps} steps: chain {final['chain'] or 0:.3f}, integer {final['integer']:.3f}, "
            f"float32 {final['float32']:.3f}",
        ],
        figures={NAME: plot(results, config)},
    )


def plot(results: dict[str, Any], config: ModelConfig) -> Figure:
    fig, (ax,) = figure(1, width=7.0)
    history = results["chain"]["history"]
    direct = results["direct"]
    ax.plot([r["steps"] for r in history], [100 * r["accuracy"] for r in history], marker=".", linestyle="-",
            linewidth=0.8, label="through the chain (regtest node + miner)")
    ax.plot(direct["steps"], [100 * a for a in direct["integer_accuracy"]], label="integer engine, direct")
    ax.plot(direct["steps"], [100 * a for a in direct["float32_accuracy"]], linestyle="--", label="float32 twin")
    ax.set_title(f"digits, dims {config.dims}, batch {config.batch_size}, lr 2^-{config.lr_shift}")
    ax.set_xlabel("training steps")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
