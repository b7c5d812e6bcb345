"""Prototype: outliers kept exactly as a sparse side stream, the bulk coded without them
(issue 11), judged by a panel model at equal file size; nothing in the library.

    PYTHONPATH=$PWD/bench:$PWD .venv/bin/python bench/outliers.py --models silero \
        --variants main,out:8:0.01,out:12:0.02:f32 --targets 1.95,2,2.05 [--bias synthetic]

A variant is ``main`` (the codec as it is) or ``out:K:CAP[:f16|f32][:rF][:keep]``: in
every weight matrix and kernel (role matrix or conv) of at least MIN_ELEMENTS elements,
the elements with |w| > K · s_r, s_r a robust scale of their row (median |w| of the row /
0.6745; of the tensor where a row's median is 0), at most CAP of the tensor's elements
(the largest |w| / s_r first; ``rF``: s_r at least F × the tensor's median |w| / 0.6745,
so that a row of mostly zeros gives none), are taken out: set to 0 in the tensor the
codec codes (so its steps and per-row steps are chosen on the rest) and written back
exactly (float16, default, or float32) into the decoded model before it is judged. Their
cost is priced: the positions as gaps (LEB128 varints) and the values, each section the
smaller of zstd-19 and raw, plus HEADER_BYTES a tensor; the codec is given target − cost
/ (the model's weights), and each line shows the file's bits per weight and the total
with the side stream. ``keep``: each such tensor's sensitivity × (its mean square without
the outliers / with them), so that the objective (``layer``: error over the tensor's mean
square) weighs its error as the whole tensor's, not as the bulk's (without it the bulk,
of smaller mean square, is given more bits; with it Silero's encoder convs are coded to
nothing: BENCHMARKS.md, "Outliers kept exactly as a sparse side stream").

A variant may end in ``+RULES``: `bench/lowrate.py`'s rules (``t:TEXT:K``, ``lstm:…``,
``snr:F``, ``bn:RULE``) set for it, e.g. ``out:16:0.002+t:rnn.weight:2``.

``--tensors``: for the first target, each weight matrix and kernel's SNR against the
original (the outliers written back), the share of its non-zero weights restored as 0, and its
outliers' count.

``--bias synthetic`` (ONNX): the data-free bias correction the CLI does by default,
handed the coded tensors with the outliers written back.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import zstandard
from bn_rows import short, subject_for
from lowrate import set_variant

from weightdna.codec.compress import compress_model, decompress_model
from weightdna.codec.ratecontrol import Target
from weightdna.weights import load_weights
from weightdna.weights.model import ModelWeights, TensorSource

MIN_ELEMENTS = 1024
HEADER_BYTES = 8
ROLES = ("matrix", "conv")


def pick(values: np.ndarray, k: float, cap: float, floor: float = 0.0) -> np.ndarray:
    """Flat positions (sorted) of ``values``' outliers under the variant's rule; ``floor``:
    no row's scale under that share of the tensor's."""
    rows = values.reshape(values.shape[0], -1)
    mags = np.abs(rows)
    scale = np.median(mags, axis=1, keepdims=True) / 0.6745
    whole = np.median(mags) / 0.6745 or mags.mean() or 1.0
    scale = np.where(scale > 0, scale, whole)
    scale = np.maximum(scale, floor * whole)
    ratio = (mags / scale).reshape(-1)
    over = np.flatnonzero(ratio > k)
    most = int(cap * ratio.size)
    if over.size > most:
        over = over[np.argsort(-ratio[over], kind="stable")[:most]]
    return np.sort(over)


def varints(numbers: np.ndarray) -> bytes:
    out = bytearray()
    for n in numbers.tolist():
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out)


def smaller(data: bytes) -> int:
    return min(len(data), len(zstandard.ZstdCompressor(level=19).compress(data)))


def side_cost(positions: np.ndarray, exact: np.ndarray) -> int:
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    return HEADER_BYTES + smaller(varints(gaps)) + smaller(exact.tobytes())


def take_outliers(weights: ModelWeights, k: float, cap: float, dtype: str, floor: float = 0.0
                  ) -> tuple[ModelWeights, dict[str, tuple[np.ndarray, np.ndarray]], int,
                             dict[str, float]]:
    """(weights with the outliers at 0, {name: (positions, exact values)}, side bytes,
    {name: its mean square without the outliers over with them})."""
    sources = dict(weights.sources)
    taken, cost, shares = {}, 0, {}
    for info in weights:
        if info.role not in ROLES or info.numel < MIN_ELEMENTS or info.ndim < 2:
            continue
        t = weights.tensor(info.name)
        values = t.double().numpy()
        positions = pick(values, k, cap, floor)
        if not positions.size:
            continue
        exact = values.reshape(-1)[positions].astype(dtype)
        signal = float(np.dot(values.reshape(-1), values.reshape(-1)))
        shares[info.name] = 1.0 - float(np.dot(values.reshape(-1)[positions],
                                                values.reshape(-1)[positions])) / signal
        flat = t.reshape(-1).clone()
        flat[torch.from_numpy(positions)] = 0
        sources[info.name] = TensorSource.held(flat.reshape(t.shape))
        taken[info.name] = (positions, exact)
        cost += side_cost(positions, exact)
    return dataclasses.replace(weights, sources=sources), taken, cost, shares


def written_back(state: Mapping[str, torch.Tensor],
                 taken: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for name, (positions, exact) in taken.items():
        t = out[name].clone()
        flat = t.reshape(-1)
        flat[torch.from_numpy(positions)] = torch.from_numpy(exact.astype(np.float64)).to(t.dtype)
        out[name] = t
    return out


class _WrittenBack(Mapping):
    def __init__(self, restored: Mapping[str, torch.Tensor], taken) -> None:
        self.restored, self.taken = restored, taken

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self.restored[name]
        return written_back({name: t}, self.taken)[name] if name in self.taken else t

    def __iter__(self):  # noqa: ANN204
        return iter(self.restored)

    def __len__(self) -> int:
        return len(self.restored)


def tensor_lines(weights: ModelWeights, state: Mapping[str, torch.Tensor],
                 taken: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    lines = []
    for info in weights:
        if info.role not in ROLES or info.numel < MIN_ELEMENTS:
            continue
        a, b = weights.tensor(info.name).double(), state[info.name].double()
        error = max(float(((a - b) ** 2).sum()), 1e-300)
        snr = 10 * np.log10(max(float((a * a).sum()), 1e-300) / error)
        nonzero = a != 0
        zeroed = float((nonzero & (b == 0)).sum()) / max(int(nonzero.sum()), 1)
        count = taken[info.name][0].size if info.name in taken else 0
        lines.append(f"    {info.name[-48:]:48s} {snr:5.1f} dB zeroed {zeroed:.2f} "
                     f"outliers {count}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="silero")
    parser.add_argument("--variants", default="main,out:8:0.01")
    parser.add_argument("--targets", default="1.95,2,2.05")
    parser.add_argument("--bias", default="none", choices=("none", "synthetic"))
    parser.add_argument("--tensors", action="store_true")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            subject = subject_for(name, tmp)
            weights = load_weights(subject.path)
            correction = None
            if args.bias == "synthetic":
                from weightdna.evaluate.onnx_correction import onnx_bias_correction
                correction = onnx_bias_correction(subject.path, note=lambda line: None)
            n = weights.total_numel
            for variant in args.variants.split(","):
                outlier_rule, _, rules = variant.partition("+")
                set_variant(rules or "main")
                coded, taken, cost, sensitivity = weights, {}, 0, None
                if outlier_rule != "main":
                    kind, k, cap, *more = outlier_rule.split(":")
                    floors = [float(m[1:]) for m in more if m.startswith("r")]
                    if kind != "out" or not set(more) - {f"r{f:g}" for f in floors} <= {
                            "f16", "f32", "keep"}:
                        raise SystemExit(f"unknown variant {variant!r}")
                    dtype = "float32" if "f32" in more else "float16"
                    coded, taken, cost, shares = take_outliers(
                        weights, float(k), float(cap), dtype, floors[0] if floors else 0.0)
                    if "keep" in more:
                        sensitivity = shares
                    count = sum(p.size for p, _ in taken.values())
                    print(f"{name} {variant}: {count} outliers in {len(taken)} tensors, "
                          f"{cost} bytes ({8 * cost / n:.4f} bits/weight)", flush=True)
                adjust = None
                if correction is not None:
                    def adjust(restored, taken=taken, correction=correction):
                        return correction(_WrittenBack(restored, taken))
                kept = []
                for i, target in enumerate(targets):
                    start = time.process_time()
                    point = Path(tempfile.mkdtemp(dir=tmp))
                    dna, out = point / "m.dna", point / "r.safetensors"
                    report = compress_model(coded, dna,
                                            Target("bits_per_weight", target - 8 * cost / n),
                                            adjust=adjust, sensitivity=sensitivity)
                    decompress_model(dna, out)
                    state = written_back(load_weights(out).state_dict(), taken)
                    value, extra = subject.judge(state)
                    kept.append(value)
                    total = report.bits_per_weight + 8 * cost / n
                    print(f"| {name} | {variant} | {target:g} | {report.bits_per_weight:.3f} | "
                          f"{total:.3f} | {100 * value:.2f} | {short(extra)} | "
                          f"{time.process_time() - start:.0f} s |", flush=True)
                    if i == 0 and args.tensors:
                        print("\n".join(tensor_lines(weights, state, taken)), flush=True)
                    for path in (dna, out):
                        path.unlink()
                print(f"| {name} | {variant} | mean | | | **{100 * sum(kept) / len(kept):.2f}**"
                      " | | |", flush=True)
    set_variant("main")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
