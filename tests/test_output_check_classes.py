"""The output check on a graph whose image input reaches a Conv into a BatchNorm first: fed
BatchNorm-matched inputs (`weightdna.evaluate.bn_inputs`, MATCHED_SAMPLES of them), it must
warn on a deliberately broken classifier and not on an intact one; and the class-score
figures (`class_scores`, `top_changes`, `lead_changes`) it reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

from weightdna.evaluate import bn_inputs  # noqa: E402
from weightdna.evaluate.outputs import (  # noqa: E402
    MATCHED_SAMPLES,
    MOVING_SHARE,
    SAMPLES,
    check_outputs,
    class_scores,
    lead_changes,
    moving_share,
    top_changes,
)
from weightdna.weights import load_weights  # noqa: E402

SHAPE = (16, 3, 24, 32)


class _Classifier(torch.nn.Module):
    """Conv → BatchNorm → ReLU → mean over the image → Linear → Softmax over two classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return torch.softmax(self.head(features), dim=1)


def _exported(path: Path) -> Path:
    """The classifier with the running statistics of smooth, grey, offset images (as
    tests/test_bn_inputs.py makes them), exported with its BatchNorm kept."""
    torch.manual_seed(0)
    net = _Classifier().eval()
    rng = np.random.default_rng(1)
    images = (0.4 * bn_inputs.smooth_noise(SHAPE, 4.0, "shared", rng)
              + np.array([0.6, 0.5, 0.7]).reshape(1, 3, 1, 1)).astype(np.float32)
    with torch.no_grad():
        y = net.conv(torch.from_numpy(images))
        net.norm.running_mean.copy_(y.mean(dim=(0, 2, 3)))
        net.norm.running_var.copy_(y.var(dim=(0, 2, 3), unbiased=False))
        net.head.weight.mul_(8.0)  # confident calls that differ from image to image
    torch.onnx.export(net, (torch.zeros(1, 3, 24, 32),), str(path), input_names=["image"],
                      output_names=["p"], opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE,  # EVAL folds the BatchNorm
                      dynamic_axes={"image": {0: "batch"}, "p": {0: "batch"}})
    return path


def _named(state: dict[str, torch.Tensor], shape: tuple[int, ...]) -> str:
    return next(name for name, t in state.items() if tuple(t.shape) == shape)


def test_an_intact_classifier_is_not_warned_and_a_broken_one_is(tmp_path: Path) -> None:
    path = _exported(tmp_path / "net.onnx")
    state = load_weights(path).state_dict()
    same = check_outputs(path, state)
    assert same is not None and same.informative and not same.diverged, same
    assert same.samples == MATCHED_SAMPLES > SAMPLES and "BatchNorm-matched" in same.describe()
    assert same.probability_distance == 0.0 and same.top_changed == 0.0
    assert same.lead_change == 0.0 and "top class changed on 0.0%" in same.describe()
    # Small noise on every weight (1% of each tensor's deviation): still the same classifier.
    generator = torch.Generator().manual_seed(0)
    kept = {k: v + 0.01 * v.float().std() * torch.randn(v.shape, generator=generator)
            if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
    close = check_outputs(path, kept)
    assert close is not None and not close.diverged, close
    # The head's two rows swapped: every call turns.
    head = _named(state, (2, 8))
    broken = dict(state)
    broken[head] = state[head].flip(0)
    turned = check_outputs(path, broken)
    assert turned is not None and turned.informative and turned.diverged, turned
    assert turned.top_changed is not None and turned.top_changed > 0.5, turned
    assert "mean total variation distance" in turned.warning()


def test_class_scores_are_softmax_rows_or_small_logit_vectors() -> None:
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert class_scores(p, 1.0)
    assert not class_scores(np.array([[0.2, 0.7], [0.6, 0.3]]), 1.0)  # a sigmoid's, each alone
    assert class_scores(np.zeros((4, 10)), 0.0)  # logits
    assert not class_scores(np.zeros((4, 5000)), 0.0)  # too many to be a classifier's
    assert not class_scores(np.zeros((4, 1)), 1.0) and not class_scores(np.zeros(4), 0.0)


def test_top_changes_and_the_lead_change() -> None:
    a = np.array([[[0.9, 0.1], [0.3, 0.7]], [[0.5, 0.5], [0.2, 0.8]]])
    b = np.array([[[0.4, 0.6], [0.3, 0.7]], [[0.5, 0.5], [0.2, 0.8]]])
    assert top_changes(a, a) == 0.0
    assert top_changes(a, b) == 0.25  # one position of four
    # The lead of class 0 at the first position: log 0.9 − log 0.1 → log 0.4 − log 0.6.
    expected = abs((np.log(0.4) - np.log(0.6)) - (np.log(0.9) - np.log(0.1))) / 4
    assert lead_changes(a, b, probability=True) == pytest.approx(expected)
    logits = np.array([[3.0, 1.0, 0.0]])
    assert lead_changes(logits, logits + 5.0, probability=False) == 0.0  # an offset alone
    assert lead_changes(logits, np.array([[1.0, 3.0, 0.0]]), False) == pytest.approx(4.0)


def test_a_probability_map_that_moves_at_one_blob_tells_nothing() -> None:
    # A detector's map on 32 inputs: all near 0 but one blob of 4 pixels on one input.
    maps = np.full((32, 1, 64, 64), 1e-6)
    maps[5, 0, 10:12, 20:22] = 0.98
    assert 0 < moving_share(maps) < MOVING_SHARE
    maps[:, 0, :, :8] = np.random.default_rng(0).uniform(size=(32, 64, 8))  # an eighth moves
    assert 0.1 < moving_share(maps) <= 0.125
    # A Softmax's last axis is one position: two classes that move on every input.
    assert moving_share(np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])) == 2 / 3
    assert moving_share(np.array([[0.2, 0.8], [0.2, 0.8]])) == 0.0


def test_rows_that_are_distributions_are_probabilities() -> None:
    from weightdna.evaluate.outputs import sums_to_one

    assert sums_to_one(np.array([[0.2, 0.8], [1.0, 0.0]]))
    assert not sums_to_one(np.array([[0.2, 0.7], [1.0, 0.0]]))  # a row sums to 0.9
    assert not sums_to_one(np.array([[1.2, -0.2], [0.5, 0.5]]))  # a negative value
    assert not sums_to_one(np.array([[1.0], [1.0]]))  # one value a row: not a distribution


def test_sentence_embeddings_are_judged_by_their_mean_cosine() -> None:
    from weightdna.evaluate.outputs import EMBEDDING_COSINE_WARNING, OutputCheck

    # MiniLM at 3 bits per weight (measured: worst 0.9827, mean 0.9864; its 540 sentences'
    # mean cosine 0.9899): kept. Noise at 20 dB on its weights (mean 0.9438; 0.9593): not.
    kept = OutputCheck("bert", 8, worst_cosine=0.9827, mean_cosine=0.9864)
    assert not kept.diverged
    broken = OutputCheck("bert", 8, worst_cosine=0.9292, mean_cosine=0.9438)
    assert broken.diverged and f"< {EMBEDDING_COSINE_WARNING}" in broken.warning()
    # Other kinds keep the worst cosine's rule.
    assert OutputCheck("onnx", 8, worst_cosine=0.9827, mean_cosine=0.9864).diverged


def test_the_warning_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    import argparse

    from weightdna.cli.compress import _diverged
    from weightdna.evaluate.outputs import OutputCheck

    monkeypatch.chdir(tmp_path)  # the model is an ONNX file (`is_onnx_file`: by its name,
    Path("m.onnx").write_bytes(b"")  # and there)
    args = argparse.Namespace(model="m.onnx", output="m.dna", bits_per_weight=3.0, snr=None,
                              psnr=None, max_abs_error=None)
    broken = OutputCheck("onnx", 8, worst_cosine=0.5, mean_cosine=0.6)
    assert _diverged(OutputCheck("onnx", 8, 0.999, 0.9995), args) is None
    said = _diverged(broken, args, corrected=True)
    assert "--bits-per-weight 4" in said and "--bias-correction none" in said
    assert "weightdna evaluate m.onnx m.dna --inputs X.npz" in said
    assert "--bias-correction" not in _diverged(broken, args)
    args = argparse.Namespace(model="m.safetensors", output="m.dna", bits_per_weight=None,
                              snr=20.0, psnr=None, max_abs_error=None)
    said = _diverged(broken, args)
    assert "--snr 26" in said and "--inputs" not in said
