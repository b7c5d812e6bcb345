"""The DNA: SIREN initialisation and gradients, fitting, spectral bias, metrics,
reproducibility, resume, hold-out error, and whole-model DNA files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightdna.dna import (
    ErrorTally,
    FitConfig,
    ModelDNA,
    Siren,
    build_network,
    error_metrics,
    fit_dna,
    fit_model,
    learning_rate,
    predict,
    psnr,
    relative_l2_error,
    siren_weight_bound,
    snr,
)
from weightdna.dna.siren import _SineFunction
from weightdna.errors import InvalidInputError, ModelFileError
from weightdna.weights import ModelWeights


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the timings stay sane when other processes share the cores, and the
    bit-for-bit comparisons do not depend on how many there are."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def grid_signal(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A sum of sinusoids on an n×n grid over [−1, 1]², scaled to max|s| = 1."""
    g = np.linspace(-1.0, 1.0, n, dtype=np.float64)
    x, y = np.meshgrid(g, g, indexing="ij")
    s = (np.sin(2 * np.pi * 3 * x) * np.cos(2 * np.pi * 2 * y)
         + 0.5 * np.sin(2 * np.pi * (5 * x + 4 * y) + 0.3)
         + 0.3 * np.cos(2 * np.pi * 7 * y))
    s /= np.abs(s).max()
    coords = np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)
    return coords, s.ravel().astype(np.float32)


# --- the SIREN itself --------------------------------------------------------------------

def test_siren_initialisation_follows_the_paper():
    torch.manual_seed(0)
    net = Siren(4, width=256, depth=3, omega0=30.0)
    first = net.layers[0].linear.weight
    hidden = [layer.linear.weight for layer in net.layers[1:]] + [net.output.weight]
    assert first.abs().max() <= 1 / 4
    assert first.abs().max() > 0.9 / 4  # uniform over the whole interval, not narrower
    bound = math.sqrt(6 / 256) / 30
    assert siren_weight_bound(256, 30.0, first=False) == pytest.approx(bound)
    for w in hidden:
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.9 * bound
        # U(−a, a) has standard deviation a/√3.
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_sine_layer_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(33, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    w = (torch.rand(5, 7, dtype=torch.float64, generator=gen) - 0.5).requires_grad_()
    b = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True)
    upstream = torch.randn(33, 5, dtype=torch.float64, generator=gen)

    ours = _SineFunction.apply(x, w, b, 30.0)
    grads = torch.autograd.grad(ours, (x, w, b), upstream)
    reference = torch.sin(30.0 * (x @ w.t() + b))
    expected = torch.autograd.grad(reference, (x, w, b), upstream)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_siren_training_and_inference_paths_agree():
    torch.manual_seed(2)
    net = Siren(4, width=32, depth=3)
    x = torch.rand(100, 4) * 2 - 1
    with torch.no_grad():
        plain = net(x)
    torch.testing.assert_close(net(x), plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("architecture", ["siren", "fourier", "relu"])
def test_every_architecture_learns_and_predicts_in_chunks(architecture):
    coords, _ = grid_signal(32)
    values = np.sin(np.pi * coords[:, 0]) * np.cos(np.pi * coords[:, 1])  # low frequency
    config = FitConfig(architecture=architecture, width=32, depth=2, steps=100, lr=3e-3,
                       fourier_features=16, fourier_scale=2.0, eval_every=10)
    result = fit_dna(coords, values, config)
    assert result.history[-1][1] < 0.5 * result.history[0][1]  # the loss fell
    chunked = predict(result.network, coords, chunk_size=100, device="cpu")
    np.testing.assert_allclose(chunked, result.prediction, rtol=1e-5, atol=1e-6)
    rebuilt = build_network(config, 2)  # the same seed builds the same starting network
    assert all(torch.equal(a, b) for a, b in zip(
        rebuilt.state_dict().values(), build_network(config, 2).state_dict().values(),
        strict=True))


# --- fitting -------------------------------------------------------------------------

@pytest.mark.slow
def test_siren_fits_sinusoids_and_relu_shows_spectral_bias():
    coords, values = grid_signal(256)
    budget = dict(width=64, depth=3, steps=300, batch_size=8192, lr=1e-3, seed=0)
    siren = fit_dna(coords, values, FitConfig(architecture="siren", **budget))
    relu = fit_dna(coords, values, FitConfig(architecture="relu", **budget))
    assert siren.parameter_count == relu.parameter_count  # the same size of network
    assert siren.train_metrics.psnr >= 40.0
    assert relu.train_metrics.psnr <= siren.train_metrics.psnr - 15.0


def smooth_and_shuffled(shape=(64, 48)) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of a low-frequency function of (row, column), and the same values shuffled."""
    i = torch.linspace(0, 1, shape[0], dtype=torch.float64)[:, None]
    j = torch.linspace(0, 1, shape[1], dtype=torch.float64)[None, :]
    smooth = 0.02 * (torch.sin(2.5 * i + 1.0) * torch.cos(1.5 * j) + 0.5 * i * j)
    smooth -= smooth.mean()  # else predicting the mean alone would score several dB of SNR
    gen = torch.Generator().manual_seed(3)
    shuffled = smooth.reshape(-1)[torch.randperm(smooth.numel(), generator=gen)]
    return smooth.float(), shuffled.reshape(shape).float()


def test_dna_reconstructs_a_smooth_tensor_but_not_shuffled_weights():
    smooth, shuffled = smooth_and_shuffled()
    weights = ModelWeights.from_tensors({"smooth.weight": smooth, "shuffled.weight": shuffled})
    # 417 parameters for 3072 weights: a ratio of 7.4.
    config = FitConfig(width=16, depth=2, steps=800, lr=3e-3, holdout=0.2, seed=0)
    dna = fit_model(weights, config, granularity="tensor")
    fitted, noise = dna.tensors["smooth.weight"], dna.tensors["shuffled.weight"]
    assert dna.network_ratio(fitted.network) > 7
    assert fitted.metrics.snr >= 35.0
    assert fitted.holdout_metrics.snr >= 30.0  # generalises to weights it never saw
    assert noise.metrics.snr <= 5.0
    assert noise.holdout_metrics.snr <= 3.0  # and shuffled weights are not predictable
    assert dna.holdout_metrics is not None
    assert (fitted.train_metrics.count + fitted.holdout_metrics.count) == smooth.numel()


def test_small_tensor_is_not_drowned_by_a_large_one():
    smooth, _ = smooth_and_shuffled()
    weights = ModelWeights.from_tensors({"big.weight": smooth * 1e3, "tiny.weight": smooth * 1e-3})
    dna = fit_model(weights, FitConfig(width=16, depth=2, steps=300, lr=3e-3),
                    granularity="model")
    # Normalised per tensor, both are the same target; without it the tiny one is ~0 dB.
    assert dna.tensors["tiny.weight"].metrics.snr >= 25.0
    assert dna.tensors["tiny.weight"].scale == pytest.approx(smooth.std().item() * 1e-3, rel=1e-3)


def test_a_seed_gives_bit_identical_fits():
    coords, values = grid_signal(48)
    config = FitConfig(width=32, depth=2, steps=60, batch_size=512, holdout=0.1, seed=7)
    a, b = fit_dna(coords, values, config), fit_dna(coords, values, config)
    for pa, pb in zip(a.network.state_dict().values(), b.network.state_dict().values(),
                      strict=True):
        assert torch.equal(pa, pb)
    assert np.array_equal(a.prediction, b.prediction)
    assert np.array_equal(a.holdout_mask, b.holdout_mask)
    other = fit_dna(coords, values, FitConfig(**{**config.as_dict(), "seed": 8}))
    assert not np.array_equal(a.prediction, other.prediction)


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_resume_repeats_an_unbroken_fit(tmp_path, schedule):
    coords, values = grid_signal(48)
    config = FitConfig(width=32, depth=2, steps=60, batch_size=256, checkpoint_every=20,
                       eval_every=10, patience=50, schedule=schedule, seed=3)
    states = []
    unbroken = fit_dna(coords, values, config, checkpoint=states.append)
    assert [s["step"] for s in states] == [20, 40, 60]

    path = tmp_path / "fit.ckpt"
    torch.save(states[0], path)
    resumed = fit_dna(coords, values, config, resume=path)
    for pa, pb in zip(unbroken.network.state_dict().values(),
                      resumed.network.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert resumed.history == unbroken.history
    assert np.array_equal(resumed.prediction, unbroken.prediction)

    with pytest.raises(InvalidInputError, match="different settings"):
        fit_dna(coords, values, FitConfig(**{**config.as_dict(), "lr": 0.5}), resume=path)


@pytest.mark.parametrize("batch_size", [256, 4096])
def test_a_fit_without_checkpoints_matches_torch_adam_bit_for_bit(batch_size):
    # Without checkpoints the CPU fit steps with _PlainAdam (no torch.optim.Optimizer, so no
    # torch._dynamo import); with them, torch.optim.Adam. The parameters must be identical.
    coords, values = grid_signal(48)
    config = FitConfig(width=16, depth=2, steps=40, batch_size=batch_size,
                       checkpoint_every=1000, clip=0.5, schedule="cosine", seed=5)
    plain = fit_dna(coords, values, config)
    with_torch = fit_dna(coords, values, config, checkpoint=lambda state: None)
    for pa, pb in zip(plain.network.state_dict().values(),
                      with_torch.network.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert plain.history == with_torch.history


def test_model_fit_resumes_after_an_interruption(tmp_path):
    smooth, shuffled = smooth_and_shuffled((16, 12))
    weights = ModelWeights.from_tensors({"a.weight": smooth, "b.weight": shuffled,
                                         "c.bias": smooth[0]})
    config = FitConfig(width=8, depth=2, steps=40, eval_every=10, checkpoint_every=10)
    unbroken = fit_model(weights, config, granularity="tensor")

    def stop_in_second_network(p):
        if p.index == 1 and p.fit.step == 20:
            raise KeyboardInterrupt

    path = tmp_path / "model.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit_model(weights, config, granularity="tensor", checkpoint=path,
                  progress=stop_in_second_network)
    resumed = fit_model(weights, config, granularity="tensor", resume=path)
    a, b = unbroken.reconstruct(device="cpu"), resumed.reconstruct(device="cpu")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_early_stop_on_a_plateau():
    coords = np.zeros((64, 2), np.float32)
    values = np.zeros(64, np.float32)  # fitted at once; the loss cannot improve for long
    result = fit_dna(coords, values, FitConfig(width=8, depth=1, steps=5000, eval_every=10,
                                               patience=3, min_delta=0.5))
    assert result.stopped_early
    assert result.steps_run < 5000


def test_learning_rate_schedules():
    cosine = FitConfig(steps=100, lr=1.0, schedule="cosine")
    assert learning_rate(cosine, 0) == 1.0
    assert learning_rate(cosine, 50) == pytest.approx(0.5)
    step = FitConfig(steps=90, lr=1.0, schedule="step", step_gamma=0.1)
    assert [learning_rate(step, s) for s in (0, 29, 30, 60)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01])


def test_invalid_settings_are_user_errors():
    with pytest.raises(InvalidInputError, match="holdout"):
        FitConfig(holdout=1.0)
    with pytest.raises(InvalidInputError, match="architecture"):
        FitConfig(architecture="transformer")
    with pytest.raises(InvalidInputError):
        fit_dna(np.zeros((3, 2)), np.zeros(4))


# --- metrics -------------------------------------------------------------------------

def test_metrics_on_known_cases():
    w = np.array([1.0, -0.5, 0.25, 0.0])
    assert snr(w, np.zeros_like(w)) == pytest.approx(0.0)  # predicting zero: 0 dB
    assert relative_l2_error(w, np.zeros_like(w)) == pytest.approx(1.0)
    approx = w + np.array([0.1, -0.1, 0.1, -0.1])
    m = error_metrics(w, approx)
    assert m.mse == pytest.approx(0.01)
    assert m.psnr == pytest.approx(20.0)  # MAX = max|w| = 1: 10 log10(1 / 0.01)
    assert m.max_abs == pytest.approx(0.1)
    assert m.normalisation == "maxabs"
    assert psnr(w, approx, "range") == pytest.approx(10 * math.log10(1.5**2 / 0.01))
    assert psnr(2 * w, 2 * approx) == pytest.approx(20.0)  # scale-free once normalised
    assert m.snr == pytest.approx(10 * math.log10(np.sum(w**2) / 0.04))
    assert error_metrics(w, w).psnr == math.inf
    with pytest.raises(ValueError, match="normalisation"):
        psnr(w, approx, "peak")


def test_pooled_metrics_normalise_each_tensor():
    a, b = np.array([1.0, -1.0]), np.array([100.0, -100.0])
    tally = ErrorTally()
    tally.add(a, a + 0.1)   # normalised error 0.1
    tally.add(b, b + 10.0)  # normalised error 0.1 as well
    pooled = tally.metrics()
    assert pooled.count == 4
    assert pooled.psnr == pytest.approx(20.0)
    assert pooled.snr == pytest.approx(10 * math.log10((2 + 2e4) / (0.02 + 200)))


# --- .dna.pt files -------------------------------------------------------------------

def test_dna_file_round_trip(tmp_path):
    smooth, _ = smooth_and_shuffled((16, 12))
    ids = torch.arange(7)
    weights = ModelWeights.from_tensors({"enc.layer.0.w.weight": smooth,
                                         "enc.layer.1.w.weight": smooth.half(),
                                         "position_ids": ids})
    dna = fit_model(weights, FitConfig(width=8, depth=2, steps=20), granularity="group")
    path = dna.save(tmp_path / "m.dna.pt")
    loaded = ModelDNA.load(path)
    assert len(loaded.networks) == 1
    before, after = dna.reconstruct(device="cpu"), loaded.reconstruct(device="cpu")
    assert list(after) == ["enc.layer.0.w.weight", "enc.layer.1.w.weight", "position_ids"]
    assert after["enc.layer.1.w.weight"].dtype == torch.float16
    assert torch.equal(after["position_ids"], ids)
    assert all(torch.equal(before[n], after[n]) for n in before)
    # The stored metrics are those of what reconstruct writes.
    m = error_metrics(smooth, after["enc.layer.0.w.weight"])
    assert m.snr == pytest.approx(loaded.tensors["enc.layer.0.w.weight"].metrics.snr)


def test_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.dna.pt"
    torch.save({"something": torch.zeros(2)}, bad)
    with pytest.raises(ModelFileError, match="not a weightdna"):
        ModelDNA.load(bad)
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelFileError):
        ModelDNA.load(bad)
