"""Fitting the DNA of a whole model, and the ``.dna.pt`` file that holds it.

A DNA is one network per tensor (``granularity="tensor"``), per role (``"group"``: all
matrices share one, all biases another, ...) or one for the model (``"model"``); every
network reads the four coordinates φ of ``weightdna.coords``.

Targets are normalised per tensor before fitting, so that a tensor of small scale is not
drowned by a large one, by the rule ``target_normalisation`` names:

* ``"standard"`` (default): ``(w − mean(w)) / std(w)`` (a constant tensor: std taken as 1);
* ``"maxabs"``: ``w / max|w|``;
* ``"none"``: w as it is.

The offset and scale are stored with the DNA and undone on reconstruction. Metrics are
measured on the reconstruction in the original units and dtype (what ``reconstruct``
writes).

``.dna.pt`` files hold only plain tensors, dicts, lists, strings and numbers, and are read
with ``torch.load(weights_only=True)``: nothing in them can execute code.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from weightdna.coords import CoordinateSpace
from weightdna.dna.fit import (
    RESULT_NEUTRAL_FIELDS,
    FitConfig,
    FitProgress,
    build_network,
    count_parameters,
    fit_dna,
    load_checkpoint,
    predict,
    resolve_device,
    save_checkpoint,
)
from weightdna.dna.metrics import PSNR_NORMALISATIONS, ErrorMetrics, ErrorTally, psnr_peak
from weightdna.dna.options import GRANULARITIES, TARGET_NORMALISATIONS
from weightdna.errors import InvalidInputError, ModelFileError, OutputExistsError
from weightdna.weights import ModelWeights, TensorInfo

DNA_FORMAT = "weightdna.dna.pt"
DNA_VERSION = 1
COORDINATE_COUNT = 4


@dataclass(frozen=True)
class ModelFitProgress:
    """Progress of one network's fit within a model fit (``index`` of ``groups``)."""

    group: str
    index: int
    groups: int
    fit: FitProgress


@dataclass
class DNANetwork:
    """One fitted network and the tensors it represents."""

    key: str
    tensors: list[str]
    network: nn.Module
    steps_run: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        """Parameters (and buffers) of the network."""
        return count_parameters(self.network)


@dataclass
class TensorDNA:
    """How one tensor is represented: its network, its normalisation, its errors."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    network: int
    offset: float
    scale: float
    metrics: ErrorMetrics
    train_metrics: ErrorMetrics | None = None
    holdout_metrics: ErrorMetrics | None = None

    @property
    def numel(self) -> int:
        """Weights in the tensor."""
        return math.prod(self.shape)


@dataclass
class ModelDNA:
    """The DNA of a model: its networks, per-tensor normalisation and metrics, and the
    tensors it does not fit (kept exactly)."""

    config: FitConfig
    granularity: str
    target_normalisation: str
    psnr_normalisation: str
    space: list[TensorInfo]
    networks: list[DNANetwork]
    tensors: dict[str, TensorDNA]
    kept: dict[str, torch.Tensor]
    order: list[str]
    source: str = ""
    metrics: ErrorMetrics | None = None
    holdout_metrics: ErrorMetrics | None = None

    @property
    def parameter_count(self) -> int:
        """Parameters of all networks together."""
        return sum(n.parameter_count for n in self.networks)

    @property
    def fitted_numel(self) -> int:
        """Weights the networks represent."""
        return sum(t.numel for t in self.tensors.values())

    def network_ratio(self, index: int) -> float:
        """Weights represented by network ``index`` per parameter of it."""
        net = self.networks[index]
        return sum(self.tensors[n].numel for n in net.tensors) / max(net.parameter_count, 1)

    def coordinate_space(self) -> CoordinateSpace:
        """The coordinate space φ of the model the DNA was fitted to."""
        return CoordinateSpace(self.space)

    def reconstruct(self, device: str = "auto",
                    chunk_size: int = 1 << 18) -> dict[str, torch.Tensor]:
        """Every tensor of the model, in its original order, shape and dtype: the DNA's
        prediction for fitted tensors, the kept tensors exactly."""
        space = self.coordinate_space()
        out: dict[str, torch.Tensor] = {}
        for name in self.order:
            if name in self.kept:
                out[name] = self.kept[name]
            else:
                t = self.tensors[name]
                out[name] = _predict_tensor(self.networks[t.network].network, space, t,
                                            device, chunk_size)
        return out

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the DNA as a ``.dna.pt`` file, atomically."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; choose another name or use --force.")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.to_state(), path)
        return path

    def to_state(self) -> dict[str, Any]:
        """The plain dict a ``.dna.pt`` file holds."""
        return {
            "format": DNA_FORMAT,
            "version": DNA_VERSION,
            "source": self.source,
            "granularity": self.granularity,
            "target_normalisation": self.target_normalisation,
            "psnr_normalisation": self.psnr_normalisation,
            "config": self.config.as_dict(),
            "space": [_info_state(i) for i in self.space],
            "networks": [{
                "key": n.key, "tensors": list(n.tensors),
                "state_dict": {k: v.detach().cpu().clone()
                               for k, v in n.network.state_dict().items()},
                "steps_run": n.steps_run, "seconds": n.seconds,
                "stopped_early": n.stopped_early,
                "history": [[s, v] for s, v in n.history],
            } for n in self.networks],
            "tensors": {name: {
                "shape": list(t.shape), "dtype": t.dtype, "network": t.network,
                "offset": t.offset, "scale": t.scale, "metrics": t.metrics.as_dict(),
                "train_metrics": _metrics_state(t.train_metrics),
                "holdout_metrics": _metrics_state(t.holdout_metrics),
            } for name, t in self.tensors.items()},
            "kept": {k: v.detach().cpu().contiguous() for k, v in self.kept.items()},
            "order": list(self.order),
            "metrics": _metrics_state(self.metrics),
            "holdout_metrics": _metrics_state(self.holdout_metrics),
        }

    @classmethod
    def load(cls, path: str | Path) -> ModelDNA:
        """Read a ``.dna.pt`` file (weights_only: plain data, never code)."""
        if not Path(path).is_file():
            raise ModelFileError(f"{path} does not exist or is not a file.")
        state = load_checkpoint(path)
        try:
            return cls.from_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path} is not a valid .dna.pt file: {exc}; fit the "
                                 "model again (`weightdna fit`).") from exc

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ModelDNA:
        """Rebuild a DNA from the plain dict of a ``.dna.pt`` file."""
        if not isinstance(state, Mapping) or state.get("format") != DNA_FORMAT:
            raise ModelFileError("not a weightdna .dna.pt file (its format field is missing)")
        if state.get("version") != DNA_VERSION:
            raise ModelFileError(f".dna.pt version {state.get('version')} is not supported "
                                 f"(this weightdna reads version {DNA_VERSION})")
        config = FitConfig.from_dict(state["config"])
        networks = []
        for entry in state["networks"]:
            net = _stored_network(config, entry["state_dict"])
            networks.append(DNANetwork(
                str(entry["key"]), [str(n) for n in entry["tensors"]], net.eval(),
                int(entry["steps_run"]), float(entry["seconds"]), bool(entry["stopped_early"]),
                [(int(s), float(v)) for s, v in entry["history"]]))
        tensors = {}
        for name, t in state["tensors"].items():
            if not 0 <= int(t["network"]) < len(networks):
                raise ValueError(f"{name} refers to network {t['network']}, which is missing")
            tensors[name] = TensorDNA(
                name, tuple(int(s) for s in t["shape"]), str(t["dtype"]), int(t["network"]),
                float(t["offset"]), float(t["scale"]), _metrics_from(t["metrics"]),
                _metrics_from(t["train_metrics"]), _metrics_from(t["holdout_metrics"]))
        space = [_info_from(i) for i in state["space"]]
        shapes = {i.name: i.shape for i in space}
        for name, t in tensors.items():  # the network predicts one value per coordinate
            if shapes.get(name) != t.shape:
                raise ValueError(f"{name} is {list(t.shape)}, but its coordinates are of "
                                 f"{list(shapes.get(name, []))}")
        kept = dict(state["kept"])
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in kept.items()):
            raise ValueError("the tensors kept exactly are not all tensors by name")
        order = [str(n) for n in state["order"]]
        missing = [n for n in order if n not in tensors and n not in kept]
        if missing:
            raise ValueError(f"tensors without a value or a network: {', '.join(missing[:5])}")
        return cls(config, str(state["granularity"]), str(state["target_normalisation"]),
                   str(state["psnr_normalisation"]),
                   space, networks, tensors, kept, order,
                   str(state["source"]), _metrics_from(state["metrics"]),
                   _metrics_from(state["holdout_metrics"]))


def _stored_network(config: FitConfig, stored: object) -> nn.Module:
    """The network ``config`` describes with the stored state dict ``stored`` in it. The two
    are compared first on a network without memory (the meta device), so that settings
    that do not match the file (a width of 10^6) allocate nothing. Raises ValueError."""
    with torch.device("meta"):
        wanted = {k: tuple(v.shape) for k, v in
                  build_network(config, COORDINATE_COUNT).state_dict().items()}
    if not isinstance(stored, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in stored.values()):
        raise ValueError("a network's state_dict is not a dict of tensors")
    given = {k: tuple(v.shape) for k, v in stored.items()}
    if given != wanted:
        raise ValueError("a network's stored tensors do not match its settings (architecture, "
                         "width, depth)")
    net = build_network(config, COORDINATE_COUNT)
    net.load_state_dict(stored)
    return net


def select_tensors(weights: ModelWeights,
                   patterns: Sequence[str] | None = None) -> list[TensorInfo]:
    """The fittable tensors whose names match any glob pattern (all when none is given)."""
    infos = list(weights.float_infos())
    if not patterns:
        return infos
    chosen = [i for i in infos if any(fnmatch.fnmatchcase(i.name, p) for p in patterns)]
    if not chosen:
        raise InvalidInputError(
            f"no floating-point tensor matches {', '.join(map(repr, patterns))}; "
            "`weightdna weights MODEL` lists the names (glob patterns such as '*.query.weight' "
            "work).")
    return chosen


def normalisation_constants(values: np.ndarray, rule: str) -> tuple[float, float]:
    """(offset, scale) with target = (w − offset) / scale under the named rule."""
    if rule == "standard":
        offset, scale = float(values.mean()), float(values.std())
    elif rule == "maxabs":
        offset, scale = 0.0, float(np.abs(values).max()) if values.size else 0.0
    elif rule == "none":
        return 0.0, 1.0
    else:
        raise InvalidInputError(f"unknown target normalisation {rule!r}; use one of "
                                f"{', '.join(TARGET_NORMALISATIONS)}")
    return offset, (scale if scale > 0.0 and math.isfinite(scale) else 1.0)


def group_key(info: TensorInfo, granularity: str) -> str:
    """The network a tensor belongs to: its name, its role, or the whole model."""
    if granularity == "tensor":
        return info.name
    if granularity == "group":
        return info.role
    if granularity == "model":
        return "model"
    raise InvalidInputError(f"unknown granularity {granularity!r}; use one of "
                            f"{', '.join(GRANULARITIES)}")


def fit_model(weights: ModelWeights, config: FitConfig | None = None, *,
              granularity: str = "tensor", tensors: Sequence[str] | None = None,
              target_normalisation: str = "standard", psnr_normalisation: str = "maxabs",
              tensor_weights: Mapping[str, float] | None = None,
              progress: Callable[[ModelFitProgress], None] | None = None,
              checkpoint: str | Path | None = None,
              resume: str | Path | None = None) -> ModelDNA:
    """Fit the DNA of ``weights``: the tensors matching ``tensors`` (glob patterns; all
    floating-point tensors by default) at the chosen granularity.

    tensor_weights: a loss weight per tensor name (1 by default). checkpoint: a file
    written every ``config.checkpoint_every`` steps and after each network; resume: such a
    file, from which the fit continues exactly.
    """
    config = config or FitConfig()
    if psnr_normalisation not in PSNR_NORMALISATIONS:
        raise InvalidInputError(f"unknown PSNR normalisation {psnr_normalisation!r}; use one "
                                f"of {', '.join(PSNR_NORMALISATIONS)}")
    normalisation_constants(np.zeros(1), target_normalisation)  # validates the rule name
    selected = select_tensors(weights, tensors)
    space = CoordinateSpace.from_weights(weights)
    groups: dict[str, list[TensorInfo]] = {}
    for info in selected:
        groups.setdefault(group_key(info, granularity), []).append(info)
    unknown = set(tensor_weights or {}) - {i.name for i in selected}
    if unknown:
        raise InvalidInputError(f"tensor weights name tensors that are not fitted: "
                                f"{', '.join(sorted(unknown))}")

    settings = {"config": config.as_dict(), "granularity": granularity,
                "target_normalisation": target_normalisation,
                "tensors": [i.name for i in selected]}
    done: dict[str, dict[str, Any]] = {}
    resume_key, resume_state = None, None
    if resume is not None:
        saved = load_checkpoint(resume)
        if saved.get("kind") != "weightdna.model_fit_state":
            raise InvalidInputError(f"{resume} is not a checkpoint of `weightdna fit`")
        def comparable(s: dict[str, Any]) -> dict[str, Any]:
            return {**s, "config": {k: v for k, v in s["config"].items()
                                    if k not in RESULT_NEUTRAL_FIELDS}}

        if comparable(saved["settings"]) != comparable(settings):
            raise InvalidInputError(f"{resume} was written by a fit with other settings or "
                                    "tensors; resume with the same ones")
        done = dict(saved["done"])
        resume_key, resume_state = saved.get("current"), saved.get("fit_state")

    def write_checkpoint(current: str | None, fit_state: dict[str, Any] | None) -> None:
        if checkpoint is not None:
            save_checkpoint({"kind": "weightdna.model_fit_state", "version": 1,
                             "settings": settings, "done": done, "current": current,
                             "fit_state": fit_state}, checkpoint)

    dna_networks: list[DNANetwork] = []
    tensor_dna: dict[str, TensorDNA] = {}
    total, held = ErrorTally(psnr_normalisation), ErrorTally(psnr_normalisation)
    any_holdout = False
    for index, (key, infos) in enumerate(groups.items()):
        originals = {i.name: weights.numpy(i.name) for i in infos}
        constants = {n: normalisation_constants(v, target_normalisation)
                     for n, v in originals.items()}
        coords = np.concatenate([space.coordinates(i.name, dtype=np.float32) for i in infos])
        if key in done:
            entry = done[key]
            network = build_network(config, COORDINATE_COUNT)
            network.load_state_dict(entry["network"])
            mask = entry["holdout_mask"].numpy()
            prediction = predict(network, coords, config.eval_chunk, config.device)
        else:
            values = np.concatenate([((originals[n] - o) / s).astype(np.float32).reshape(-1)
                                     for n, (o, s) in constants.items()])
            sample_weight = None
            if tensor_weights:
                sample_weight = np.concatenate([
                    np.full(i.numel, float(tensor_weights.get(i.name, 1.0)), np.float32)
                    for i in infos])

            def report(p: FitProgress, key: str = key, index: int = index) -> None:
                if progress is not None:
                    progress(ModelFitProgress(key, index, len(groups), p))

            def save_state(state: dict[str, Any], key: str = key) -> None:
                write_checkpoint(key, state)

            result = fit_dna(coords, values, config, sample_weight=sample_weight,
                             progress=report,
                             checkpoint=save_state if checkpoint is not None else None,
                             resume=resume_state if resume_key == key else None)
            del values, sample_weight
            network, mask = result.network, result.holdout_mask
            prediction = result.prediction
            entry = {"network": {k: v.clone() for k, v in network.state_dict().items()},
                     "holdout_mask": torch.from_numpy(mask.copy()),
                     "steps_run": result.steps_run, "seconds": result.seconds,
                     "stopped_early": result.stopped_early,
                     "history": [[s, v] for s, v in result.history]}
            done[key] = entry
            write_checkpoint(None, None)
        dna_networks.append(DNANetwork(key, [i.name for i in infos], network.eval(),
                                       int(entry["steps_run"]), float(entry["seconds"]),
                                       bool(entry["stopped_early"]),
                                       [(int(s), float(v)) for s, v in entry["history"]]))
        offset = 0
        for info in infos:
            original = originals[info.name]
            o, s = constants[info.name]
            t = TensorDNA(info.name, info.shape, info.dtype, index, o, s,
                          ErrorTally(psnr_normalisation).metrics())
            part = slice(offset, offset + info.numel)
            offset += info.numel
            # Measured on what reconstruct writes: denormalised and in the tensor's dtype.
            approx_np = _denormalise(prediction[part], t).to(torch.float64).numpy().reshape(-1)
            original = original.reshape(-1)
            peak = psnr_peak(original, psnr_normalisation)
            t.metrics = _tally(psnr_normalisation, original, approx_np, peak)
            total.add(original, approx_np, peak)
            tensor_mask = mask[part]
            if tensor_mask.any():
                any_holdout = True
                t.train_metrics = _tally(psnr_normalisation, original[~tensor_mask],
                                         approx_np[~tensor_mask], peak)
                t.holdout_metrics = _tally(psnr_normalisation, original[tensor_mask],
                                           approx_np[tensor_mask], peak)
                held.add(original[tensor_mask], approx_np[tensor_mask], peak)
            tensor_dna[info.name] = t
        del coords, prediction

    fitted = set(tensor_dna)
    kept = {n: weights.tensor(n) for n in weights.names if n not in fitted}
    return ModelDNA(config, granularity, target_normalisation, psnr_normalisation,
                    list(space.infos.values()), dna_networks, tensor_dna, kept,
                    list(weights.names), str(weights.path), total.metrics(),
                    held.metrics() if any_holdout else None)


def _tally(normalisation: str, original: np.ndarray, approx: np.ndarray,
           peak: float) -> ErrorMetrics:
    tally = ErrorTally(normalisation)
    tally.add(original, approx, peak)
    return tally.metrics()


def _predict_tensor(network: nn.Module, space: CoordinateSpace, t: TensorDNA,
                    device: str, chunk_size: int) -> torch.Tensor:
    coords = space.coordinates(t.name, dtype=np.float32)
    return _denormalise(predict(network, coords, chunk_size, resolve_device(device)), t)


def _denormalise(prediction: np.ndarray, t: TensorDNA) -> torch.Tensor:
    """A tensor's values from the network's output: undo the target normalisation."""
    values = prediction.astype(np.float64) * t.scale + t.offset
    return torch.from_numpy(values.reshape(t.shape)).to(getattr(torch, t.dtype))


def _info_state(info: TensorInfo) -> dict[str, Any]:
    return {"name": info.name, "shape": list(info.shape), "dtype": info.dtype,
            "role": info.role, "layer": info.layer, "kind": info.kind}


def _info_from(state: Mapping[str, Any]) -> TensorInfo:
    layer = state["layer"]
    return TensorInfo(str(state["name"]), tuple(int(s) for s in state["shape"]),
                      str(state["dtype"]), str(state["role"]),
                      None if layer is None else int(layer), str(state["kind"]))


def _metrics_state(metrics: ErrorMetrics | None) -> dict[str, Any] | None:
    return None if metrics is None else metrics.as_dict()


def _metrics_from(state: Mapping[str, Any] | None) -> ErrorMetrics | None:
    return None if state is None else ErrorMetrics(**state)
