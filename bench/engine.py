"""One training epoch of the same models in weightdna.nn and in PyTorch, on the CPU.

    .venv/bin/python bench/engine.py [--repeats 7] [--threads 1] [--profile] [--markdown]

Both sides train the reference digits MLP (64 → 128 → 64 → 10) and the small digits CNN
(conv16 → pool → conv32 → pool → dense64 → 10) from ``weightdna.train``: the same float32
data, batch size 32, the same shuffled order, Adam at 1e-3, softmax cross-entropy. The
engine's BLAS and torch are held to the same number of threads (one by default: the
matrices are small, and on a shared machine extra threads mostly add noise). Each repeat
times one epoch on each side, interleaved, after a warm-up epoch; the medians are compared.
``--profile`` adds the engine's time per layer type (forward + backward) for the CNN.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections import defaultdict

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from weightdna.data import load_digits
from weightdna.nn.losses import SoftmaxCrossEntropy
from weightdna.nn.model import Model
from weightdna.nn.optimizers import Adam
from weightdna.train import build_digits_cnn, build_digits_mlp

BATCH = 32
LEARNING_RATE = 1e-3


def torch_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def torch_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def engine_epoch(model: Model, optimizer: Adam, X: np.ndarray, y: np.ndarray,
                 order: np.ndarray) -> float:
    """Seconds for one epoch of Model.fit's own loop (the same code a user runs)."""
    start = time.perf_counter()
    model.fit(X[order], y[order], epochs=1, batch_size=BATCH, optimizer=optimizer,
              loss=SoftmaxCrossEntropy(), shuffle=False)
    return time.perf_counter() - start


def torch_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor,
                y: torch.Tensor, order: np.ndarray) -> float:
    """Seconds for one epoch of the usual torch loop over the same batches."""
    loss_fn = torch.nn.CrossEntropyLoss()
    index = torch.from_numpy(order)
    start = time.perf_counter()
    X, y = X[index], y[index]
    for b in range(0, len(X), BATCH):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(X[b : b + BATCH]), y[b : b + BATCH])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def compare(name: str, engine: Model, twin: torch.nn.Module, X: np.ndarray, y: np.ndarray,
            repeats: int) -> dict[str, float]:
    """Median epoch times of engine and torch on the same data and order."""
    # Same starting weights on both sides, so both do the same arithmetic.
    twin.load_state_dict({k.removeprefix("layers."): torch.from_numpy(v.copy())
                          for k, v in engine.state_dict().items()})
    engine_opt = Adam(learning_rate=LEARNING_RATE)
    torch_opt = torch.optim.Adam(twin.parameters(), lr=LEARNING_RATE)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    rng = np.random.default_rng(0)
    engine_times, torch_times = [], []
    for repeat in range(repeats + 1):
        order = rng.permutation(len(X))
        e = engine_epoch(engine, engine_opt, X, y, order)
        t = torch_epoch(twin, torch_opt, X_t, y_t, order)
        if repeat:  # the first is the warm-up
            engine_times.append(e)
            torch_times.append(t)
    e, t = statistics.median(engine_times), statistics.median(torch_times)
    return {"model": name, "engine_s": e, "torch_s": t, "ratio": e / t}


def profile_layers(model: Model, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Engine seconds per layer type (forward + backward) over one epoch of batches."""
    totals: dict[str, float] = defaultdict(float)
    loss = SoftmaxCrossEntropy()
    optimizer = Adam(learning_rate=LEARNING_RATE)
    for b in range(0, len(X), BATCH):
        out = X[b : b + BATCH]
        for layer in model.layers:
            start = time.perf_counter()
            out = layer.forward(out, training=True)
            totals[type(layer).__name__] += time.perf_counter() - start
        start = time.perf_counter()
        loss.forward(out, y[b : b + BATCH])
        grad = loss.backward(out, y[b : b + BATCH])
        totals["SoftmaxCrossEntropy"] += time.perf_counter() - start
        for layer in reversed(model.layers):
            start = time.perf_counter()
            grad = layer.backward(grad)
            totals[type(layer).__name__] += time.perf_counter() - start
        start = time.perf_counter()
        optimizer.step(model.layers)
        totals["Adam step"] += time.perf_counter() - start
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per side")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / torch threads")
    parser.add_argument("--profile", action="store_true", help="engine time per layer type")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    X_flat, _, y, _ = load_digits(seed=0)
    X_img, _, _, _ = load_digits(seed=0, image=True)
    rows = []
    with threadpool_limits(limits=args.threads, user_api="blas"):
        rows.append(compare("digits MLP 64-128-64-10", build_digits_mlp(0), torch_mlp(),
                            X_flat, y, args.repeats))
        rows.append(compare("digits CNN conv16-conv32-64-10", build_digits_cnn(0), torch_cnn(),
                            X_img, y, args.repeats))
        layers = profile_layers(build_digits_cnn(0), X_img, y) if args.profile else None

    cpu = _cpu_name()
    print(f"{datetime.date.today()}  {cpu}, {args.threads} thread(s); numpy {np.__version__}, "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"one epoch = {len(X_flat)} samples, batch {BATCH}, float32, Adam; median of "
          f"{args.repeats} epochs")
    if args.markdown:
        print("\n| model | weightdna.nn (s/epoch) | PyTorch (s/epoch) | engine / torch |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['engine_s']:.4f} | {r['torch_s']:.4f} | "
                  f"{r['ratio']:.2f} |")
    else:
        for r in rows:
            print(f"{r['model']:32s} engine {r['engine_s']:.4f} s  torch {r['torch_s']:.4f} s  "
                  f"ratio engine/torch {r['ratio']:.2f}")
    if layers:
        total = sum(layers.values())
        print("\nengine CNN, one epoch, time per layer type (forward + backward):")
        for name, seconds in layers.items():
            print(f"  {name:20s} {seconds:.4f} s  {100 * seconds / total:5.1f}%")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
