"""What a client checks before buying training: parsing ``--dims``, loading the dataset, and the
job spec that the chain will take *and* that miners can train.

The chain's JobSubmit rule checks the model's shape and size against the preset, but only knows a
dataset by its id, so it cannot tell whether the model's input width equals the dataset's feature
width, or whether it has an output per class; a job that misses either is accepted yet can never
be mined (its escrow stays locked until the owner cancels it). :func:`check_job` runs both checks
locally, with the very functions the chain and the training engine use.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from chain.errors import PouwError
from chain.types import MAX_NAME_BYTES, JobSpec

if TYPE_CHECKING:
    from consensus.presets import Preset
    from pouw.datasets import Dataset

_DIMS = re.compile(r"\d{1,5}(?:,\d{1,5})+")


class BadJob(PouwError):
    """A job the wallet refuses to submit."""


def parse_dims(text: str) -> tuple[int, ...]:
    """``"64,128,64"`` → ``(64, 128, 64)``: the widths of the model's layers, input first."""
    compact = text.replace(" ", "")
    if not _DIMS.fullmatch(compact):
        raise BadJob(f"bad --dims {text!r}: give at least two comma-separated widths, e.g. 64,128,64")
    return tuple(int(part) for part in compact.split(","))


def load_job_dataset(source: str, test_share: float = 0.2, seed: int = 0) -> Dataset:
    """``digits`` (built into every node), or a ``.npz`` (x_train, y_train, x_test, y_test, or x, y)
    or ``.csv`` (features, then an integer label) file; float features are quantized to 0..63."""
    from pouw.datasets import load_dataset

    if source != "digits" and not source.endswith((".npz", ".csv")):
        raise BadJob(f"bad --dataset {source!r}: use 'digits' or the path of a .npz or .csv file")
    return load_dataset(source, test_share, seed)


def check_job(preset: Preset, spec: JobSpec, dataset: Dataset) -> None:
    """Raise unless the chain accepts ``spec`` and a miner can train it on ``dataset``."""
    from consensus.presets import model_config
    from pouw.engine import check_compatible

    if spec.total_steps == 0:
        raise BadJob("a job needs at least one step")
    preset.validate_job_spec(spec)
    check_compatible(model_config(spec), dataset)


def label(text: str) -> str:
    """``text`` cut to the longest prefix that fits a name field (whole UTF-8 characters only)."""
    return text.encode()[:MAX_NAME_BYTES].decode("utf-8", "ignore")
