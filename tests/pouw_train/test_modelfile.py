"""pouw.modelfile: the per-row forward pass equals the engine's on each row alone, predictions do
not depend on the batch, the safetensors file round-trips, and the float export agrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pouw import modelfile
from pouw.backends import get_backend
from pouw.datasets import digits
from pouw.engine import logits, train
from pouw.evaluate import evaluate
from pouw.model import ModelConfig, ModelState, init_state

CONFIG = ModelConfig((64, 64, 64), 64, 8)


@pytest.fixture(scope="module")
def trained() -> ModelState:
    return train(CONFIG, init_state(CONFIG, b"m" * 32), digits(), b"t" * 32, get_backend("cpu"), 60)


def model_of(state: ModelState) -> modelfile.ModelFile:
    return modelfile.ModelFile(CONFIG, state, n_classes=10, job_id="ab" * 32, dataset_id=digits().id.hex(),
                               chain_id=7, preset="regtest")


def test_rows_equal_the_engine_on_each_row_alone(trained: ModelState) -> None:
    x = digits().x_test[:24]
    mant, exps = modelfile.forward_rows(modelfile.quantized_weights(trained), x)
    for r in range(len(x)):
        batch = np.zeros((64, 64), dtype=np.int8)
        batch[0] = x[r]
        out = logits(CONFIG, trained, batch, get_backend("cpu"))
        assert np.array_equal(out.mant[0].numpy(), mant[r]) and out.exp == exps[r]


def test_predict_is_batch_independent_and_matches_the_evaluation(trained: ModelState) -> None:
    ds = digits()
    model = model_of(trained)
    together = model.predict(ds.x_test)
    alone = np.concatenate([model.predict(ds.x_test[i : i + 1]) for i in range(len(ds.x_test))])
    shuffled = np.random.default_rng(1).permutation(len(ds.x_test))
    assert np.array_equal(together, alone)
    assert np.array_equal(model.predict(ds.x_test[shuffled]), together[shuffled])
    assert int((together == ds.y_test).sum()) == evaluate(CONFIG, trained, ds, get_backend("cpu")).correct
    assert together.max() < 10


def test_argmax_covers_the_real_classes_only(trained: ModelState) -> None:
    model = modelfile.ModelFile(CONFIG, trained, n_classes=3)
    assert set(model.predict(digits().x_test).tolist()) <= {0, 1, 2}


def test_safetensors_round_trip(trained: ModelState, tmp_path: Path) -> None:
    model = model_of(trained)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = modelfile.load(path)
    assert loaded.state == trained and loaded.n_classes == 10 and loaded.job_id == "ab" * 32
    assert loaded.metadata() == model.metadata() and modelfile.loads(path.read_bytes()).state == trained
    meta = loaded.metadata()
    assert (meta["dims"], meta["master_frac_bits"], meta["input_exp"], meta["chain"]) == ("64,64,64", "24", "-6", "7")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(modelfile.BadModelFile):
        modelfile.load(tmp_path / "junk.safetensors")
    with pytest.raises(modelfile.BadModelFile):
        model.predict(np.full((1, 64), 64))
    with pytest.raises(modelfile.BadModelFile):
        model.predict(np.zeros((1, 65)))


def test_float_export_agrees_with_the_chain(trained: ModelState) -> None:
    ds = digits()
    model = model_of(trained)
    module = model.to_torch()
    with torch.no_grad():
        exported = module(model.torch_input(ds.x_test)).argmax(dim=1).numpy()
    agreement = float((exported == model.predict(ds.x_test)).mean())
    assert agreement >= 0.97, agreement


def test_scaled_model_applies_the_recorded_scaling(trained: ModelState) -> None:
    scaling = {"low": [0.0] * 64, "high": [2.0] * 64}
    model = modelfile.ModelFile(CONFIG, trained, n_classes=10, feature_scaling=scaling)
    x = digits().x_test[:10]
    assert np.array_equal(model.predict(x.astype(np.float64) * 2.0 / 63.0), model_of(trained).predict(x))
