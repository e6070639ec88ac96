"""Suite ``useful``: does mining train the model? Held-out accuracy against steps, three ways.

1. Through the chain: a regtest node and a CPU miner run for a while; the node evaluates the
   built-in digits job after every block, and this suite reads ``GET /api/jobs/{id}`` (polling,
   since the node returns the latest 500 rows) for its (steps, accuracy) history.
2. The same model trained directly with the integer engine, and
3. its float32 twin, both from :func:`benchmarks.accuracy_curves.compare` for as many steps.

4. Against scikit-learn: the recommended configurations (docs/wallet.md) trained with the integer
   engine on digits, iris and breast-cancer (float features quantized by :mod:`pouw.quantize`,
   test share 0.2, seed 0), evaluated as the node evaluates (per row, real classes), against
   ``MLPClassifier(hidden_layer_sizes=(64,))`` on the same split; also the agreement of the
   exported float PyTorch module (:meth:`pouw.modelfile.ModelFile.to_torch`) with the chain's
   predictions on the held-out rows.

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

SKLEARN_SPLIT = (0.2, 0)
"""(test share, seed) of the iris and breast-cancer splits."""
RECOMMENDED: dict[str, tuple[tuple[int, ...], int, int, int]] = {
    # dataset: (dims, batch, lr_shift, steps) -- docs/wallet.md "Recommended settings"
    "digits": ((64, 128, 64), 64, 8, 2000),
    "iris": ((64, 64, 64), 64, 8, 1000),
    "breast-cancer": ((64, 128, 64), 64, 9, 1500),
}

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


def _dataset(name: str) -> tuple[Any, Any]:
    """(the chain's Dataset, (x_train, y_train, x_test, y_test) as floats for scikit-learn)."""
    import numpy as np

    from pouw.datasets import digits, from_arrays, split_rows

    if name == "digits":
        ds = digits()
        return ds, (ds.x_train / 63.0, ds.y_train, ds.x_test / 63.0, ds.y_test)
    from sklearn.datasets import load_breast_cancer, load_iris

    bunch = load_iris() if name == "iris" else load_breast_cancer()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    parts = split_rows(x, y, *SKLEARN_SPLIT)
    ds = from_arrays(name, *parts)
    lo, hi = parts[0].min(axis=0), parts[0].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ds, ((parts[0] - lo) / span, parts[1], (parts[2] - lo) / span, parts[3])


def against_sklearn(ctx: RunContext) -> dict[str, Any]:
    """Integer engine with the recommended settings vs scikit-learn's MLP, per dataset."""
    import torch
    from sklearn.neural_network import MLPClassifier

    from pouw.backends import get_backend
    from pouw.engine import Trainer
    from pouw.evaluate import evaluate
    from pouw.model import init_state
    from pouw.modelfile import ModelFile

    out: dict[str, Any] = {}
    for name, (dims, batch, lr_shift, steps) in ctx.progress(list(RECOMMENDED.items()), "against scikit-learn"):
        ds, (xtr, ytr, xte, yte) = _dataset(name)
        run_steps = ctx.pick(steps, steps, 100)
        config = ModelConfig(dims, batch, lr_shift)
        trainer = Trainer(config, init_state(config, b"useful/sklearn"), ds, b"useful/sklearn", get_backend("cpu"))
        trainer.run(run_steps)
        state = trainer.state()
        chain = evaluate(config, state, ds)
        mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=0).fit(xtr, ytr)
        reference = float(mlp.score(xte, yte))
        model = ModelFile(config, state, ds.n_classes)  # ds.x_test is quantized already
        with torch.no_grad():
            exported = model.to_torch()(model.torch_input(ds.x_test)).argmax(dim=1).numpy()
        agreement = float((exported == model.predict(ds.x_test)).mean())
        out[name] = {
            "dims": list(dims), "batch_size": batch, "lr_shift": lr_shift, "steps": run_steps,
            "test_rows": len(ds.x_test), "integer_accuracy": rounded(chain.accuracy),
            "sklearn_mlp_accuracy": rounded(reference), "gap_points": rounded(100 * (reference - chain.accuracy)),
            "export_agreement": rounded(agreement), "export_accuracy": rounded(float((exported == yte).mean())),
        }
    return out


def run(ctx: RunContext) -> SuiteReport:
    versus = against_sklearn(ctx)
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
        "against_sklearn": versus,
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
            "vs sklearn MLP: " + ", ".join(
                f"{name} {100 * v['integer_accuracy']:.1f}% vs {100 * v['sklearn_mlp_accuracy']:.1f}% "
                f"({v['steps']} steps; export agrees {100 * v['export_agreement']:.1f}%)"
                for name, v in versus.items()),
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
