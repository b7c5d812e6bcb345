"""Fitting a coordinate network to values at coordinates: the core of the DNA (SPEC part B).

``fit_dna(coords, values, config)`` minimises the seed's loss
``L(θ) = (1/N) Σ ‖f_θ(cᵢ) − wᵢ‖²`` (optionally weighted per sample) with Adam, a cosine or
step learning-rate schedule, gradient-norm clipping and random mini-batches of
coordinates. It knows nothing of models or tensors; ``weightdna.dna.model`` builds on it.

Reproducibility: the network is initialised from ``config.seed`` (the global RNG is left
as it was), the hold-out split and the mini-batches come from a ``torch.Generator`` seeded
from it, and the learning rate is a pure function of the step. A checkpoint holds the
network, the optimizer, the generator's state, the step and the running sums of the
progress/plateau bookkeeping, so a resumed fit repeats an unbroken one bit for bit (on the
CPU, with the same number of threads).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from weightdna.atomic import atomic_output
from weightdna.dna.fourier import FourierFeatureMLP, ReluMLP
from weightdna.dna.metrics import ErrorMetrics, ErrorTally, decibels
from weightdna.dna.options import ARCHITECTURES, PRECISIONS, SCHEDULES
from weightdna.dna.siren import Siren
from weightdna.errors import InvalidInputError, ModelFileError

# Fields that do not change the numbers a fit produces; a checkpoint may be resumed with
# different values of these.
RESULT_NEUTRAL_FIELDS = frozenset({"device", "checkpoint_every", "eval_chunk"})


@dataclass
class FitConfig:
    """Every knob of a fit. ``depth`` counts the sine (or ReLU) layers before the linear
    output layer; ``patience`` counts evaluations without a relative improvement of
    ``min_delta`` (0 disables early stopping); ``clip`` is the maximum gradient norm (0: no
    clipping); ``holdout`` is the fraction of coordinates kept out of training."""

    architecture: str = "siren"
    width: int = 64
    depth: int = 3
    omega0: float = 30.0
    hidden_omega0: float | None = None
    fourier_features: int = 64
    fourier_scale: float = 10.0
    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 16384
    schedule: str = "cosine"
    step_every: int | None = None
    step_gamma: float = 0.3
    clip: float = 1.0
    seed: int = 0
    holdout: float = 0.0
    patience: int = 0
    min_delta: float = 1e-3
    eval_every: int = 100
    eval_chunk: int = 1 << 18
    checkpoint_every: int = 0
    device: str = "auto"
    precision: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture must be one of {', '.join(ARCHITECTURES)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        for name in ("width", "depth", "steps", "batch_size", "eval_every", "eval_chunk"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not self.lr > 0:
            problems.append("lr must be positive")
        if self.clip < 0:
            problems.append("clip must be 0 (off) or positive")
        if not 0.0 <= self.holdout < 1.0:
            problems.append("holdout must be a fraction in [0, 1)")
        if self.patience < 0 or self.checkpoint_every < 0:
            problems.append("patience and checkpoint_every must be >= 0")
        if problems:
            raise InvalidInputError("invalid fit settings: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as stored in checkpoints and .dna.pt files."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        """The inverse of ``as_dict``; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class FitProgress:
    """What a progress callback sees: running means over the last ``eval_every`` steps."""

    step: int
    steps: int
    loss: float
    psnr: float
    snr: float
    lr: float


@dataclass
class FitResult:
    """A fitted network (on the CPU, in eval mode) and how it got there. ``prediction`` is
    its output at every coordinate given, in the order given; metrics are in the units of
    the values given, PSNR normalised by max-abs."""

    network: nn.Module
    config: FitConfig
    steps_run: int
    stopped_early: bool
    seconds: float
    prediction: np.ndarray
    holdout_mask: np.ndarray
    train_metrics: ErrorMetrics
    holdout_metrics: ErrorMetrics | None
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        """Parameters (and buffers) of the fitted network."""
        return count_parameters(self.network)


def count_parameters(network: nn.Module) -> int:
    """Trainable parameters plus buffers (a Fourier basis is part of what must be stored)."""
    return (sum(p.numel() for p in network.parameters())
            + sum(b.numel() for b in network.buffers()))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("CUDA was asked for but is not available; use --device cpu")
    return resolved


def build_network(config: FitConfig, in_features: int, out_features: int = 1) -> nn.Module:
    """The network ``config`` describes, initialised from ``config.seed``."""
    # Initialise under a forked global RNG: reproducible, and the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.architecture == "siren":
            return Siren(in_features, config.width, config.depth, out_features,
                         config.omega0, config.hidden_omega0)
        if config.architecture == "fourier":
            return FourierFeatureMLP(in_features, config.width, config.depth, out_features,
                                     config.fourier_features, config.fourier_scale)
        return ReluMLP(in_features, config.width, config.depth, out_features)


def learning_rate(config: FitConfig, step: int) -> float:
    """The learning rate at ``step`` (0-based): a pure function, so resuming needs no state."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
    if config.schedule == "step":
        every = config.step_every or max(1, config.steps // 3)
        return config.lr * config.step_gamma ** (step // every)
    return config.lr


@torch.no_grad()
def predict(network: nn.Module, coords: np.ndarray | torch.Tensor,
            chunk_size: int = 1 << 18, device: str | torch.device = "auto",
            precision: str = "float32") -> np.ndarray:
    """The network's output at every coordinate, evaluated in chunks (bounded memory)."""
    device = resolve_device(device)
    coords_t = torch.as_tensor(coords, dtype=torch.float32)
    network = network.to(device).eval()
    out = np.empty(coords_t.shape[0], dtype=np.float32)
    use_bf16 = precision == "bfloat16" and device.type == "cuda"
    for start in range(0, coords_t.shape[0], chunk_size):
        chunk = coords_t[start:start + chunk_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            y = network(chunk)
        out[start:start + chunk.shape[0]] = y.float().reshape(-1).cpu().numpy()
    return out


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a fit state atomically (a crash leaves the previous checkpoint intact)."""
    with atomic_output(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a fit state; only plain tensors and containers are accepted (weights_only)."""
    from weightdna.weights.load import torch_load

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist or is not a file; give a file written "
                             "by `weightdna fit`.")
    try:
        return torch_load(path, "a file written by `weightdna fit`",
                          "give a .dna.pt or checkpoint file written by `weightdna fit`")
    except ModelFileError:
        from weightdna.codec.container import MAGIC

        with open(path, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                raise ModelFileError(
                    f"{path} is a .dna file (written by `weightdna compress`), not a fitted "
                    "DNA: `weightdna decompress` decodes it.") from None
        raise


def _check_resumable(state: dict[str, Any], config: FitConfig, n_train: int) -> None:
    if state.get("kind") != "weightdna.fit_state":
        raise InvalidInputError("the checkpoint is not a weightdna fit state")
    saved = FitConfig.from_dict(state["config"]).as_dict()
    now = config.as_dict()
    changed = sorted(k for k in now if k not in RESULT_NEUTRAL_FIELDS and saved.get(k) != now[k])
    if changed:
        raise InvalidInputError(
            "the checkpoint was written with different settings ("
            + ", ".join(f"{k}: {saved.get(k)!r} now {now[k]!r}" for k in changed)
            + "); resume with the same settings")
    if int(state["n_train"]) != n_train:
        raise InvalidInputError(f"the checkpoint was fitted on {state['n_train']} coordinates, "
                                f"these data have {n_train}; resume on the same data")


def fit_dna(coords: np.ndarray | torch.Tensor, values: np.ndarray | torch.Tensor,
            config: FitConfig | None = None, *,
            sample_weight: np.ndarray | torch.Tensor | None = None,
            progress: Callable[[FitProgress], None] | None = None,
            checkpoint: str | Path | Callable[[dict[str, Any]], None] | None = None,
            resume: str | Path | dict[str, Any] | None = None) -> FitResult:
    """Fit a coordinate network to ``values`` (N,) at ``coords`` (N, k).

    ``sample_weight`` (N,) weights each squared error; ``checkpoint`` (a path or a callable
    taking the state dict) is written every ``config.checkpoint_every`` steps; ``resume``
    (a path or such a state) continues an interrupted fit exactly.
    """
    config = config or FitConfig()
    device = resolve_device(config.device)
    coords_t = torch.as_tensor(coords, dtype=torch.float32)
    values_t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if coords_t.ndim != 2 or coords_t.shape[0] != values_t.shape[0]:
        raise InvalidInputError(f"coords must be (N, k) and values (N,); got "
                                f"{tuple(coords_t.shape)} and {tuple(values_t.shape)}")
    n = coords_t.shape[0]
    if n == 0:
        raise InvalidInputError("nothing to fit: no coordinates")
    weight_t = None
    if sample_weight is not None:
        weight_t = torch.as_tensor(sample_weight, dtype=torch.float32).reshape(-1)
        if weight_t.shape[0] != n:
            raise InvalidInputError("sample_weight must have one entry per coordinate")

    # Hold-out split: its own generator, so it does not depend on the batch size or steps.
    holdout_mask = torch.zeros(n, dtype=torch.bool)
    n_hold = int(round(config.holdout * n))
    if n_hold >= n:
        raise InvalidInputError("holdout leaves no coordinate to train on")
    if n_hold:
        split = torch.Generator().manual_seed(config.seed + 0x5EED)
        holdout_mask[torch.randperm(n, generator=split)[:n_hold]] = True
    train_index = torch.nonzero(~holdout_mask).reshape(-1) if n_hold else None

    def take(t: torch.Tensor) -> torch.Tensor:
        return (t if train_index is None else t[train_index]).to(device)

    x_all, y_all = take(coords_t), take(values_t)
    w_all = take(weight_t) if weight_t is not None else None
    n_train = x_all.shape[0]
    full_batch = n_train <= config.batch_size

    network = build_network(config, coords_t.shape[1]).to(device)
    resumable = checkpoint is not None or resume is not None
    optimizer: Any = (_PlainAdam(network.parameters(), config.lr)
                      if device.type == "cpu" and not resumable
                      else torch.optim.Adam(network.parameters(), lr=config.lr))
    generator = torch.Generator(device=device).manual_seed(config.seed)
    use_bf16 = config.precision == "bfloat16" and device.type == "cuda"

    # Bookkeeping that a checkpoint must carry for a resumed fit to match an unbroken one.
    step = 0
    window_loss = torch.zeros((), device=device, dtype=torch.float64)
    window_mse = torch.zeros((), device=device, dtype=torch.float64)
    window_count = 0
    best = math.inf
    bad_evals = 0
    history: list[tuple[int, float]] = []
    stopped_early = False

    if resume is not None:
        state = load_checkpoint(resume) if isinstance(resume, (str, Path)) else resume
        _check_resumable(state, config, n_train)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].to("cpu"))
        step = int(state["step"])
        window_loss = state["window_loss"].to(device)
        window_mse = state["window_mse"].to(device)
        window_count = int(state["window_count"])
        best, bad_evals = float(state["best"]), int(state["bad_evals"])
        history = [(int(s), float(v)) for s, v in state["history"]]
        stopped_early = bool(state["stopped_early"])

    def snapshot() -> dict[str, Any]:
        return copy.deepcopy({
            "kind": "weightdna.fit_state", "version": 1, "config": config.as_dict(),
            "n_train": n_train, "step": step, "network": network.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "window_loss": window_loss, "window_mse": window_mse,
            "window_count": window_count, "best": best, "bad_evals": bad_evals,
            "history": [[s, v] for s, v in history], "stopped_early": stopped_early,
        })

    # Constants for the progress read-out: PSNR with MAX = max|y| (max-abs normalisation).
    peak_sq = float(y_all.abs().max()) ** 2
    mean_sq = float((y_all.double() ** 2).mean())
    params = [p for p in network.parameters()]
    started = time.perf_counter()
    network.train()
    while step < config.steps and not stopped_early:
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if full_batch:
            x, y, w = x_all, y_all, w_all
        else:
            index = torch.randint(n_train, (config.batch_size,), generator=generator,
                                  device=device)
            x, y = x_all[index], y_all[index]
            w = w_all[index] if w_all is not None else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = network(x)
        err = out.float().reshape(-1) - y
        sq = err * err
        mse = sq.mean()
        loss = (sq * w).mean() if w is not None else mse
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.clip, foreach=True)
        optimizer.step()
        step += 1
        # Accumulated on the device: no host synchronisation inside the loop.
        window_loss += loss.detach()
        window_mse += mse.detach()
        window_count += 1

        if step % config.eval_every == 0 or step == config.steps:
            mean_loss = float(window_loss) / window_count
            mean_mse = float(window_mse) / window_count
            history.append((step, mean_loss))
            window_loss.zero_()
            window_mse.zero_()
            window_count = 0
            if progress is not None:
                progress(FitProgress(step, config.steps, mean_loss,
                                     decibels(peak_sq, mean_mse),
                                     decibels(mean_sq, mean_mse), lr))
            if config.patience:
                if mean_loss < best * (1.0 - config.min_delta):
                    best, bad_evals = mean_loss, 0
                else:
                    bad_evals += 1
                    stopped_early = bad_evals >= config.patience
        if (checkpoint is not None and config.checkpoint_every
                and step % config.checkpoint_every == 0):
            state = snapshot()
            if callable(checkpoint):
                checkpoint(state)
            else:
                save_checkpoint(state, checkpoint)
    seconds = time.perf_counter() - started

    network = network.cpu().eval()
    prediction = predict(network, coords_t, config.eval_chunk, device, config.precision)
    network = network.cpu().eval()
    mask = holdout_mask.numpy()
    values_np = values_t.numpy()
    # Both splits use the PSNR peak of all the values, so their PSNRs compare.
    peak = float(np.max(np.abs(values_np)))
    train_metrics = _split_metrics(values_np[~mask], prediction[~mask], peak)
    holdout_metrics = _split_metrics(values_np[mask], prediction[mask], peak) if n_hold else None
    return FitResult(network, config, step, stopped_early, seconds, prediction, mask,
                     train_metrics, holdout_metrics, history)


class _PlainAdam:
    """torch.optim.Adam on the CPU without `torch.optim.Optimizer`: the same step, torch's
    own `_single_tensor_adam` (what Adam runs for CPU tensors) with Adam's defaults, so the
    same parameters bit for bit. Optimizer's first use imports `torch._dynamo` (about 1.8
    CPU s per process, paid in every codec worker for the DNA candidate's fit); this does
    not. A fit that writes or resumes checkpoints uses torch.optim.Adam, whose state they
    carry."""

    def __init__(self, params: Any, lr: float) -> None:
        from torch.optim.optimizer import _get_scalar_dtype

        self.params = list(params)
        self.param_groups = [{"lr": lr}]
        self.steps = [torch.tensor(0.0, dtype=_get_scalar_dtype()) for _ in self.params]
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                         for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                            for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        from torch.optim.adam import _single_tensor_adam

        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        with torch.no_grad():
            _single_tensor_adam(
                [self.params[i] for i in live], [self.params[i].grad for i in live],
                [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [],
                [self.steps[i] for i in live], None, None, amsgrad=False,
                has_complex=False, beta1=0.9, beta2=0.999, lr=self.param_groups[0]["lr"],
                weight_decay=0.0, eps=1e-8, maximize=False, capturable=False,
                differentiable=False, decoupled_weight_decay=False)


def _split_metrics(values: np.ndarray, prediction: np.ndarray, peak: float) -> ErrorMetrics:
    tally = ErrorTally("maxabs")
    tally.add(values, prediction, peak=peak)
    return tally.metrics()
