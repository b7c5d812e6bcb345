"""Models the codec was never tuned on, with their judges: does the default keep them working?

The digits MLP and CNN and MiniLM are what the codec was developed on. This module adds
networks built the way trained vision and audio models are, each with an evaluator:

* `BatchNormCNN`: an upsampling (Resize) front, two conv + BatchNorm + ReLU blocks and a
  linear head, trained on the digits in PyTorch;
* `give_outlier_channels`: a few output channels of a conv layer scaled up by a factor and
  their BatchNorm statistics with them, which leaves the function unchanged (up to the
  norm's ε) and gives the kernel the channel outliers trained models have (max |w| 10³–10⁴
  times the median), and with a factor of 10⁴ a running variance near 10⁸ beside small
  weights, as detection models have;
* `export_onnx`: the same network as an ONNX graph whose initializers have the opaque names
  exporters give them (no name says "running_var"), BatchNorm kept as an operator, and
  the Resize scales stored as an initializer; `onnx_accuracy` runs it in onnxruntime
  with restored weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weightdna.data import load_digits
from weightdna.evaluate.outputs import onnx_with_initializers


class BatchNormCNN(torch.nn.Module):
    """8×8 digits → Upsample ×2 → [conv 3×3 → BatchNorm → ReLU → max-pool] ×2 → linear →
    ReLU → linear: 61K weights, a small vision model's layout."""

    def __init__(self, channels: Sequence[int] = (24, 48), hidden: int = 64) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = torch.nn.Sequential(
            torch.nn.Upsample(scale_factor=2.0, mode="nearest"),
            torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.BatchNorm2d(c1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.BatchNorm2d(c2), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(c2 * 16, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@dataclass
class TrainedPanelModel:
    """A trained panel network and its held-out accuracy."""

    model: torch.nn.Module
    test_accuracy: float


def train_batchnorm_cnn(seed: int = 0, epochs: int = 12) -> TrainedPanelModel:
    """`BatchNormCNN` trained on the digits (Adam, batches of 64), in eval mode."""
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_digits(image=True, seed=seed)
    model = BatchNormCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    return TrainedPanelModel(model, torch_accuracy(model, model.state_dict()))


def give_outlier_channels(model: BatchNormCNN, channels: Sequence[int], factor: float,
                          layer: int = 5) -> None:
    """Scale output ``channels`` of the conv at ``features[layer]`` (and its bias) by
    ``factor``, and the following BatchNorm's running mean by ``factor`` and variance by
    ``factor²``: the same function, a kernel with outlier channels."""
    conv, norm = model.features[layer], model.features[layer + 1]
    index = torch.as_tensor(list(channels))
    with torch.no_grad():
        conv.weight[index] *= factor
        conv.bias[index] *= factor
        norm.running_mean[index] *= factor
        # (var + ε) scales by factor² only if ε does too: keep each channel's output.
        norm.running_var[index] = (norm.running_var[index] + norm.eps) * factor**2 - norm.eps


def torch_accuracy(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> float:
    """Held-out digits accuracy of ``model`` with the weights ``state`` (a copy is run)."""
    import copy

    restored = copy.deepcopy(model)
    restored.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    restored.eval()
    _, x_test, _, y_test = load_digits(image=True)
    with torch.no_grad():
        predicted = restored(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((predicted == y_test).mean())


def export_onnx(model: torch.nn.Module, path: str | Path) -> Path:
    """``model`` as ONNX at ``path``: initializers renamed ``onnx::<Op>_<k>`` after the first
    operator that reads them, Constant nodes' tensors moved into initializers."""
    import warnings

    import onnx

    path = Path(path)
    example = torch.zeros(1, 1, 8, 8)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        _export(model, example, path)
    proto = onnx.load(str(path))
    graph = proto.graph
    for node in list(graph.node):  # Constant nodes → initializers
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            graph.node.remove(node)
    first_reader = {}
    for node in graph.node:
        for name in node.input:
            first_reader.setdefault(name, node.op_type)
    renamed = {}
    for k, init in enumerate(graph.initializer):
        renamed[init.name] = f"onnx::{first_reader.get(init.name, 'Unused')}_{k}"
        init.name = renamed[init.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(model, (example,), str(path), input_names=["image"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      # Not EVAL: that folds each BatchNorm into its conv.
                      training=torch.onnx.TrainingMode.PRESERVE,
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def onnx_accuracy(path: str | Path, state: Mapping[str, torch.Tensor] | None = None) -> float:
    """Held-out digits accuracy of the ONNX model at ``path`` run by onnxruntime, its
    initializers replaced by ``state`` (restored tensors by name) where given."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_with_initializers(path, state),
                                           providers=["CPUExecutionProvider"])
    _, x_test, _, y_test = load_digits(image=True)
    logits = session.run(None, {"image": x_test.astype(np.float32)})[0]
    return float((logits.argmax(1) == y_test).mean())
