"""The model container: passes, fit, and safetensors save/load that reads like torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.nn.activations import ReLU, Sigmoid, Softmax, Tanh
from weightdna.nn.conv import Conv2D, MaxPool2D
from weightdna.nn.layers import Dense, Dropout, Flatten
from weightdna.nn.losses import (
    CategoricalCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
)
from weightdna.nn.model import Callback, Model
from weightdna.nn.optimizers import SGD, Adam


def small_cnn(seed: int = 0, dtype=np.float32) -> Model:
    rng = np.random.default_rng(seed)
    return Model(
        [
            Conv2D(1, 4, 3, padding=1, rng=rng, dtype=dtype),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(4 * 4 * 4, 8, rng=rng, l2=1e-4, dtype=dtype),
            Tanh(),
            Dropout(0.25, rng=rng),
            Dense(8, 3, rng=rng, dtype=dtype),
        ]
    )


def torch_twin() -> torch.nn.Module:
    """The same architecture as ``small_cnn``, held as ``self.layers`` like a torch model."""

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Conv2d(1, 4, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
                torch.nn.Flatten(),
                torch.nn.Linear(16 * 4, 8),
                torch.nn.Tanh(),
                torch.nn.Dropout(0.25),
                torch.nn.Linear(8, 3),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    return Twin()


def images(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    model = small_cnn()
    X = images()
    path = model.save(tmp_path / "m.safetensors")
    loaded = Model.load(path)
    assert loaded.architecture() == model.architecture()
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(original)
    for name, value in original.items():
        assert restored[name].dtype == value.dtype
        np.testing.assert_array_equal(restored[name], value)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_round_trip_keeps_float64(tmp_path: Path) -> None:
    model = small_cnn(dtype=np.float64)
    loaded = Model.load(model.save(tmp_path / "m.safetensors"))
    assert all(v.dtype == np.float64 for v in loaded.state_dict().values())
    X = images().astype(np.float64)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_names_and_shapes_match_torch_sequential() -> None:
    model = small_cnn()
    twin = torch_twin()
    expected = {name: tuple(t.shape) for name, t in twin.state_dict().items()}
    assert {name: v.shape for name, v in model.state_dict().items()} == expected
    # Not only the names: torch computes the same function from the engine's arrays.
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    twin.eval()
    X = images()
    with torch.no_grad():
        reference = twin(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(model.predict(X), reference, rtol=1e-5, atol=1e-6)


def test_saved_file_reads_as_plain_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    model = small_cnn()
    tensors = load_file(model.save(tmp_path / "m.safetensors"))
    assert sorted(tensors) == sorted(model.state_dict())


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no model file"):
        Model.load(tmp_path / "absent.safetensors")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not a file"):
        Model.load(tmp_path)


@pytest.mark.parametrize("keep", [0, 7, 8, 40, -1])
def test_load_rejects_truncated_file(tmp_path: Path, keep: int) -> None:
    path = small_cnn().save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-5])
    with pytest.raises(ModelFileError):
        Model.load(path)


def test_load_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\xff" * 8 + b"this is not a safetensors header")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        Model.load(path)


def test_load_rejects_file_without_architecture(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"layers.0.weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(ModelFileError, match="no engine architecture"):
        Model.load(path)


def test_load_rejects_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = small_cnn().save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="np") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors["layers.4.weight"] = np.zeros((8, 3), np.float32)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="layers.4.weight"):
        Model.load(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    first = small_cnn(seed=0)
    first.save(path)
    small_cnn(seed=1).save(path)  # replaces
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert not np.array_equal(
        Model.load(path).state_dict()["layers.0.weight"], first.state_dict()["layers.0.weight"]
    )


def test_failed_save_keeps_old_file_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.safetensors"
    small_cnn(seed=0).save(path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        small_cnn(seed=1).save(path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert path.read_bytes() == before


def test_predict_and_evaluate_shapes() -> None:
    model = small_cnn()
    X = images(25)
    y = np.arange(25) % 3
    out = model.predict(X)
    assert out.shape == (25, 3) and out.dtype == np.float32
    np.testing.assert_allclose(model.predict(X, batch_size=4), out, rtol=1e-6, atol=1e-7)
    loss, acc = model.evaluate(X, y, loss=SoftmaxCrossEntropy())
    assert isinstance(loss, float) and loss > 0
    assert 0.0 <= acc <= 1.0
    mse, nan = model.evaluate(X, np.zeros((25, 3), np.float32), loss=MeanSquaredError())
    assert mse > 0 and np.isnan(nan)


def test_predict_is_deterministic_despite_dropout() -> None:
    model = small_cnn()
    X = images()
    np.testing.assert_array_equal(model.predict(X), model.predict(X))


def test_fit_history_and_callbacks() -> None:
    calls = {"begin": None, "batches": 0, "epochs": []}

    class Count(Callback):
        def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
            calls["begin"] = (epochs, batches_per_epoch)

        def on_batch_end(self, epoch: int, batch: int) -> None:
            calls["batches"] += 1

        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            calls["epochs"].append(sorted(logs))

    X, y = images(30), np.arange(30) % 3
    history = small_cnn().fit(
        X, y, epochs=3, batch_size=8, optimizer=Adam(1e-2), loss=SoftmaxCrossEntropy(),
        validation_data=(images(9, seed=1), np.arange(9) % 3), callbacks=[Count()],
    )
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in history.values())
    assert calls["begin"] == (3, 4) and calls["batches"] == 12
    assert calls["epochs"] == [sorted(history)] * 3
    assert history["loss"][-1] < history["loss"][0]


def test_fit_regression_has_no_accuracy() -> None:
    X = np.random.default_rng(0).random((20, 2), dtype=np.float32)
    model = Model([Dense(2, 1, rng=0)])
    history = model.fit(
        X, X.sum(axis=1, keepdims=True), epochs=5, batch_size=5, optimizer=SGD(0.1),
        loss=MeanSquaredError(),
    )
    assert sorted(history) == ["loss"]
    assert history["loss"][-1] < history["loss"][0]


def test_fit_repeats_exactly_for_a_seed() -> None:
    X, y = images(30), np.arange(30) % 3
    states = []
    for _ in range(2):
        model = small_cnn(seed=3)
        model.fit(X, y, epochs=2, batch_size=7, optimizer=Adam(1e-2),
                  loss=SoftmaxCrossEntropy(), seed=5)
        states.append(model.state_dict())
    for name in states[0]:
        np.testing.assert_array_equal(states[0][name], states[1][name])


def test_softmax_cce_fused_path_matches_softmax_cross_entropy() -> None:
    X = np.random.default_rng(0).standard_normal((6, 4))
    y = np.array([0, 1, 2, 1, 0, 2])
    with_softmax = Model([Dense(4, 3, rng=1, dtype=np.float64), Softmax()])
    logits_only = Model([Dense(4, 3, rng=1, dtype=np.float64)])
    probs = with_softmax.forward(X, training=True)
    d_fused = with_softmax.backward(CategoricalCrossEntropy(), probs, y)
    logits = logits_only.forward(X, training=True)
    d_ref = logits_only.backward(SoftmaxCrossEntropy(), logits, y)
    np.testing.assert_allclose(d_fused, d_ref, rtol=1e-12)
    np.testing.assert_allclose(
        with_softmax.layers[0].grads["weight"], logits_only.layers[0].grads["weight"], rtol=1e-12
    )


def test_astype_casts_parameters_and_dtype_is_saved(tmp_path: Path) -> None:
    model = small_cnn().astype(np.float64)
    assert all(v.dtype == np.float64 for v in model.state_dict().values())
    loaded = Model.load(model.save(tmp_path / "m.safetensors"))
    assert all(v.dtype == np.float64 for v in loaded.state_dict().values())


def test_load_state_dict_checks_names_and_shapes() -> None:
    model = small_cnn()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state.pop("layers.7.bias")
    with pytest.raises(InvalidInputError, match="missing"):
        model.load_state_dict(state)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state["layers.7.bias"] = np.zeros(5, np.float32)
    with pytest.raises(InvalidInputError, match="shape"):
        model.load_state_dict(state)


def test_add_and_sigmoid_model_repr() -> None:
    model = Model().add(Dense(2, 3, rng=0)).add(Sigmoid())
    assert len(model) == 2 and model.num_parameters() == 9
    assert "(1): Sigmoid()" in repr(model)
    with pytest.raises(InvalidInputError):
        Model().add("not a layer")  # type: ignore[arg-type]
