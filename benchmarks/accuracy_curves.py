"""What exact integer training costs in accuracy: the integer MLP against float32, step for step.

Both models have the same shape, start from the same weights (the protocol's integer draw, read as
``W * 2**-24``), see the same batches (``engine.batch_indices``) and follow the same rule: SGD at
learning rate ``2**-lr_shift`` on ``1/2 * sum((logit - onehot)**2)`` over the batch and the real
classes, inputs ``q / 64``. The float32 one is ordinary PyTorch autograd. Held-out accuracy is
recorded every ``every`` steps.

Run: ``.venv/bin/python -m benchmarks.accuracy_curves`` (writes benchmarks/results/accuracy_curves.json
and accuracy_curves.png).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pouw.backends import get_backend
from pouw.datasets import Dataset, load_dataset
from pouw.engine import Trainer, batch_indices
from pouw.evaluate import evaluate
from pouw.model import INPUT_EXP, MASTER_FRAC_BITS, ModelConfig, init_state

RESULTS = Path(__file__).parent / "results"
INIT_SEED = b"accuracy-curves/init"
TRAJECTORY_SEED = b"accuracy-curves/trajectory"
RUNS = [
    ("devnet", ModelConfig((64, 128, 64), 64, 8)),
    ("deeper", ModelConfig((64, 256, 256, 64), 128, 11)),
]


@dataclass
class Comparison:
    name: str
    dims: list[int]
    batch_size: int
    lr_shift: int
    dataset: str
    dataset_id: str
    steps: list[int]
    integer_accuracy: list[float]
    float32_accuracy: list[float]
    integer_steps_per_s: float
    float32_steps_per_s: float

    def max_gap_from(self, first_step: int) -> float:
        """Largest ``|integer - float32|`` accuracy gap at the recorded steps ``>= first_step``."""
        gaps = [
            abs(i - f)
            for s, i, f in zip(self.steps, self.integer_accuracy, self.float32_accuracy, strict=True)
            if s >= first_step
        ]
        return max(gaps, default=0.0)


def integer_curve(config: ModelConfig, dataset: Dataset, steps: int, every: int) -> tuple[list[float], float]:
    """Accuracy at steps 0, every, 2*every, ... and the training speed (steps/s, evals excluded)."""
    backend = get_backend("cpu")
    trainer = Trainer(config, init_state(config, INIT_SEED), dataset, TRAJECTORY_SEED, backend)
    accuracy = [evaluate(config, trainer.state(), dataset, backend).accuracy]
    elapsed = 0.0
    while trainer.step_index < steps:
        start = time.perf_counter()
        trainer.run(min(every, steps - trainer.step_index))
        elapsed += time.perf_counter() - start
        accuracy.append(evaluate(config, trainer.state(), dataset, backend).accuracy)
    return accuracy, steps / elapsed


def float_curve(config: ModelConfig, dataset: Dataset, steps: int, every: int) -> tuple[list[float], float]:
    """The float32 twin of :func:`integer_curve`."""
    weights = [
        torch.tensor(w.astype(np.float64) * 2.0**-MASTER_FRAC_BITS, dtype=torch.float32, requires_grad=True)
        for w in init_state(config, INIT_SEED).weights
    ]
    lr = 2.0**-config.lr_shift

    def logits(x: np.ndarray) -> torch.Tensor:
        h = torch.from_numpy(x.astype(np.float32) * 2.0**INPUT_EXP)
        for i, w in enumerate(weights):
            h = h @ w if i == len(weights) - 1 else torch.relu(h @ w)
        return h[:, : dataset.n_classes]

    def accuracy() -> float:
        with torch.no_grad():
            predicted = logits(dataset.x_test).argmax(dim=1).numpy()
        return float((predicted == dataset.y_test).mean())

    curve = [accuracy()]
    elapsed = 0.0
    for step in range(steps):
        start = time.perf_counter()
        rows = batch_indices(TRAJECTORY_SEED, step, dataset.n_train, config.batch_size)
        target = torch.nn.functional.one_hot(torch.from_numpy(dataset.y_train[rows]), dataset.n_classes)
        loss = 0.5 * ((logits(dataset.x_train[rows]) - target.float()) ** 2).sum()
        grads = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for w, g in zip(weights, grads, strict=True):
                w -= lr * g
        elapsed += time.perf_counter() - start
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append(accuracy())
    return curve, steps / elapsed


def compare(name: str, config: ModelConfig, dataset_name: str, steps: int, every: int) -> Comparison:
    dataset = load_dataset(dataset_name)
    integer, int_speed = integer_curve(config, dataset, steps, every)
    floating, float_speed = float_curve(config, dataset, steps, every)
    recorded = [*range(0, steps, every), steps]
    return Comparison(
        name, list(config.dims), config.batch_size, config.lr_shift, dataset.name, dataset.id.hex(),
        recorded, integer, floating, round(int_speed, 1), round(float_speed, 1),
    )  # fmt: skip


def plot(runs: list[Comparison], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        ax.plot(run.steps, [100 * a for a in run.integer_accuracy], label="integer (int8 matmuls)")
        ax.plot(run.steps, [100 * a for a in run.float32_accuracy], label="float32", linestyle="--")
        ax.set_title(f"{run.name}: dims {tuple(run.dims)}, batch {run.batch_size}, lr 2^-{run.lr_shift}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"held-out accuracy on {run.dataset} (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny products: threads only add stalls, and steps/s stays comparable
    runs = [compare(name, config, args.dataset, args.steps, args.every) for name, config in RUNS]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "description": "held-out accuracy of the integer MLP and its float32 twin at equal steps",
        "init_seed": INIT_SEED.decode(),
        "trajectory_seed": TRAJECTORY_SEED.decode(),
        "torch_threads": 1,
        "runs": [dict(asdict(run), max_gap_from_step_100=run.max_gap_from(100)) for run in runs],
    }
    (args.out / "accuracy_curves.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(runs, args.out / "accuracy_curves.png")
    for run in runs:
        print(
            f"{run.name}: final integer {run.integer_accuracy[-1]:.3f} float32 {run.float32_accuracy[-1]:.3f}"
            f" max gap from step 100 {run.max_gap_from(100):.3f};"
            f" {run.integer_steps_per_s} int steps/s, {run.float32_steps_per_s} float steps/s"
        )


if __name__ == "__main__":
    main()
